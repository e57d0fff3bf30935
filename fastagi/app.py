"""Wiring: build the services from the settings and run the FastAGI server.

``fastagi serve`` is the production entry point. ``fastagi dev`` (``make run``) also
brings up the sandbox Asterisk and an embedded PostgreSQL cluster, for a newcomer's
machine; everything it starts stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastagi.agi.server import AgiServer, Flow
from fastagi.config import Settings, load_settings
from fastagi.flows.probe import ProbeFlow
from fastagi.logs import configure_logging

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the FastAGI server (production)")
    serve.set_defaults(handler=_serve_command)
    dev = subparsers.add_parser(
        "dev", help="sandbox Asterisk + embedded PostgreSQL + the server (make run)"
    )
    dev.set_defaults(handler=_dev_command)


def build_routes(pool: Any) -> Mapping[str, Flow]:
    from fastagi.store.probe import ProbeStore

    return {"probe": ProbeFlow(ProbeStore(pool))}


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[AgiServer]:
    """The server with its database pool, closed gracefully on exit."""
    from fastagi.store.pool import create_pool

    pool = await create_pool(settings.database)
    try:
        server = AgiServer(settings.agi, build_routes(pool))
        await server.start()
        try:
            yield server
        finally:
            await server.close(settings.agi.shutdown_grace)
    finally:
        await pool.close()


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def serve(settings: Settings) -> None:
    async with running_server(settings) as server:
        logger.info("FastAGI server listening", extra={"port": server.port})
        await until_signalled()
        logger.info("stopping: letting calls finish")


def _run(main: Any) -> None:
    """Run a coroutine on uvloop when it is installed: it is markedly faster for
    many short connections, which is what FastAGI is."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _serve_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    _run(serve(settings))
    return 0


def _dev_command(args: argparse.Namespace) -> int:
    from fastagi.devenv import run_dev

    settings = load_settings()
    configure_logging(settings.log_level)
    _run(run_dev(settings))
    return 0
