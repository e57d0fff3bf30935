"""The console's aiohttp application, and ``running_console``, which serves it inside the
running event loop (aiohttp's ``AppRunner`` and ``TCPSite``: no signal handling of its
own, the FastAGI server's stays in charge)."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web

from fastagi import metrics
from fastagi.app import Services
from fastagi.config import Settings
from fastagi.store import Stores
from fastagi.web import (
    actions,
    alarm_page,
    auth,
    board,
    configure,
    history,
    recordings_page,
    users_page,
)
from fastagi.web.feed import BoardFeed
from fastagi.web.keys import FEED, SETTINGS, STORES
from fastagi.web.security import security_headers, sessions
from fastagi.web.views import FILTERS, GLOBALS

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# How long a stop waits for requests in progress (streams end at once: the feed closes).
SHUTDOWN_SECONDS = 2.0


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(
    settings: Settings,
    stores: Stores,
    feed: BoardFeed,
    routes: Sequence[web.RouteDef] = (web.get("/healthz", healthz),),
) -> web.Application:
    app = web.Application(middlewares=[security_headers, sessions], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[STORES] = stores
    app[FEED] = feed
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("fastagi.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
    app.router.add_get("/", board.board_page, name="board")
    app.router.add_get("/events", board.events, name="events")
    app.router.add_get("/alarms/{alarm_id:\\d+}", alarm_page.alarm_page, name="alarm")
    app.router.add_post("/alarms/{alarm_id:\\d+}/deactivate", actions.deactivate)
    app.router.add_post("/alarms/{alarm_id:\\d+}/page", actions.page_now)
    app.router.add_post("/departments/interval", actions.set_interval)
    app.router.add_get("/login", auth.login_form, name="login")
    app.router.add_post("/login", auth.login)
    app.router.add_post("/logout", auth.logout)
    app.router.add_routes(routes)  # /healthz (and /metrics: fastagi/metrics)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    app.on_shutdown.append(board.stop_streams)
    configure.add_routes(app)
    history.add_routes(app)
    users_page.add_routes(app)
    recordings_page.add_routes(app)
    return app


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    web_settings = settings.web
    if web_settings.certificate is None or web_settings.private_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(web_settings.certificate, web_settings.private_key)
    return context


@dataclass(frozen=True)
class Console:
    url: str
    port: int
    feed: BoardFeed


def running_console(
    services: Services, settings: Settings
) -> contextlib.AbstractAsyncContextManager[Console]:
    """The console beside the FastAGI server (an ``Interface`` of fastagi/app.py)."""
    return serving_console(settings, services.pool, metrics.routes(services, settings))


@contextlib.asynccontextmanager
async def serving_console(
    settings: Settings,
    pool: asyncpg.Pool[asyncpg.Record],
    routes: Sequence[web.RouteDef] = (web.get("/healthz", healthz),),
) -> AsyncIterator[Console]:
    """Serve the console on ``web.host:web.port`` until the context ends. It needs only
    the database: the alarms' servers hear its actions through PostgreSQL."""
    feed = BoardFeed(pool, settings.alarm)
    await feed.start()
    app = build_app(settings, Stores.over(pool), feed, routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        context = _ssl_context(settings)
        site = web.TCPSite(
            runner, settings.web.host, settings.web.port, ssl_context=context, reuse_address=True
        )
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if context else "http"
        host = settings.web.host
        shown = f"[{host}]" if ":" in host else host
        console = Console(f"{scheme}://{shown}:{port}", port, feed)
        logger.info("web console listening", extra={"url": console.url})
        yield console
    finally:
        await runner.cleanup()
        await feed.close()
