"""AgiServer at its session cap: idle sockets cannot lock real calls out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from tests.unit.test_agi_server import agi_settings, asterisk_connection, env_bytes


@pytest.fixture
def agi_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="fastagi")
    return caplog


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


async def test_at_the_cap_a_call_evicts_the_oldest_idle_connection(agi_logs, loop_errors):
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    settings = agi_settings(max_sessions=3, environment_timeout=60)
    async with (
        AgiServer(settings, {"probe": probe}) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        idle = [await stack.enter_async_context(asterisk_connection(server)) for _ in range(3)]
        for _ in range(500):
            if server.active_sessions == 3:
                break
            await asyncio.sleep(0.01)
        # A real call at the cap: the oldest idle socket makes room for it.
        async with asterisk_connection(server) as call:
            await call.send(env_bytes("probe", uniqueid="real"))
            assert await call.closed_by_server()
        assert await idle[0].closed_by_server()
        assert served == ["real"]
        # The younger idle sockets are still there, waiting for their environment.
        assert server.active_sessions == 2

    evicted = [r for r in agi_logs.records if "evicted at max_sessions" in r.getMessage()]
    assert len(evicted) == 1
    assert evicted[0].levelno == logging.WARNING
    assert loop_errors == []


async def test_at_the_cap_a_call_whose_environment_is_unread_is_not_evicted(agi_logs, loop_errors):
    """A waiting connection with bytes the loop has not read yet may be a real call
    accepted in a burst: at the cap, a newcomer is refused rather than evicting it."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    settings = agi_settings(max_sessions=2, environment_timeout=60)
    async with (
        AgiServer(settings, {"probe": probe}) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        waiting = [await stack.enter_async_context(asterisk_connection(server)) for _ in range(2)]
        for _ in range(500):
            if server.active_sessions == 2:
                break
            await asyncio.sleep(0.01)
        # Bytes the server's loop cannot read yet: pause its reading of both.
        for protocol in list(server._pending):
            assert protocol._transport is not None
            protocol._transport.pause_reading()
        for connection in waiting:
            await connection.send(b"agi_network: yes\n")
        await asyncio.sleep(0.1)  # the bytes reach the server's kernel buffer
        async with asterisk_connection(server) as newcomer:
            assert await newcomer.closed_by_server()
        assert server.active_sessions == 2

    assert not [r for r in agi_logs.records if "evicted at max_sessions" in r.getMessage()]
    assert loop_errors == []


async def test_at_the_cap_with_every_slot_in_a_flow_the_new_connection_is_refused(agi_logs):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holds(session: AgiSession) -> None:
        entered.set()
        await release.wait()

    async with (
        AgiServer(agi_settings(max_sessions=1), {"holds": holds}) as server,
        asterisk_connection(server) as first,
    ):
        await first.send(env_bytes("holds", uniqueid="first"))
        await entered.wait()
        started = asyncio.get_running_loop().time()
        async with asterisk_connection(server) as second:
            assert await second.closed_by_server()
        # Refused at once: no environment is awaited, no task is started.
        assert asyncio.get_running_loop().time() - started < 1.0
        assert server.active_sessions == 1
        release.set()
    assert any("max_sessions" in r.getMessage() for r in agi_logs.records)
