"""AgiServer at its session cap: idle sockets cannot lock real calls out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from tests.unit.test_agi_server import WAIT, agi_settings, asterisk_connection, env_bytes


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


def kernel_holds_bytes(protocol: Any) -> bool:
    """Whether bytes wait in the kernel for the server side of a connection (a peek)."""
    sock = protocol._transport.get_extra_info("socket")
    with socket.socket(fileno=os.dup(sock.fileno())) as peek:
        try:
            return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False


async def test_at_the_cap_calls_whose_environment_is_unread_are_not_evicted(agi_logs, loop_errors):
    """Calls whose whole environment waits unread in the kernel's buffer (the loop has
    not got to them): at the cap they are read, found complete and served, and the
    newcomer is refused, since every slot holds a call."""
    entered: list[str] = []
    release = asyncio.Event()

    async def holds(session: AgiSession) -> None:
        entered.append(session.environment.uniqueid)
        await release.wait()

    settings = agi_settings(max_sessions=2, environment_timeout=60)
    async with (
        AgiServer(settings, {"holds": holds}) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        calls = [await stack.enter_async_context(asterisk_connection(server)) for _ in range(2)]
        for _ in range(500):
            if server.active_sessions == 2:
                break
            await asyncio.sleep(0.01)
        # Bytes the server's loop cannot read yet: pause its reading of both.
        for protocol in list(server._waiting):
            assert protocol._transport is not None
            protocol._transport.pause_reading()
        for number, call in enumerate(calls):
            await call.send(env_bytes("holds", uniqueid=f"call-{number}"))
        async with asyncio.timeout(WAIT):
            while not all(map(kernel_holds_bytes, server._waiting)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert entered == []
        async with asterisk_connection(server) as newcomer:
            assert await newcomer.closed_by_server()
        assert sorted(entered) == ["call-0", "call-1"]
        assert server.active_sessions == 2
        release.set()

    assert not [r for r in agi_logs.records if "evicted at max_sessions" in r.getMessage()]
    assert loop_errors == []


async def test_at_the_cap_a_stalled_sender_gives_up_its_slot_first(agi_logs, loop_errors):
    """Byte-a-minute senders do not keep their slots from a real call once their block
    has stalled for the grace (a real call's block is whole within it), and they go
    before a connection that is silent but young (it may be a call about to write)."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    grace = 0.2
    settings = agi_settings(max_sessions=3, environment_timeout=60)
    async with (
        AgiServer(settings, {"probe": probe}, eviction_grace=grace) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        slow = [await stack.enter_async_context(asterisk_connection(server)) for _ in range(2)]
        for connection in slow:
            await connection.send(b"agi_")
        async with asyncio.timeout(WAIT):
            while any(protocol.first_byte_at is None for protocol in server._waiting):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # The rule is about age: let the first bytes the server read grow older than it.
        await asyncio.sleep(grace)
        await stack.enter_async_context(asterisk_connection(server))  # young and silent
        async with asterisk_connection(server) as call:
            await call.send(env_bytes("probe", uniqueid="real"))
            assert await call.closed_by_server()
        assert served == ["real"]
        assert await slow[0].closed_by_server()
        first_slow = f"127.0.0.1:{slow[0].writer.get_extra_info('sockname')[1]}"

    evicted = [r for r in agi_logs.records if "evicted at max_sessions" in r.getMessage()]
    assert [r.__dict__["peer"] for r in evicted] == [first_slow]
    assert loop_errors == []


async def test_at_the_cap_a_flood_of_fresh_partial_blocks_cannot_lock_calls_out(
    agi_logs, loop_errors
):
    """Every slot holds a connection that began its block within the grace (a flood
    that sends a few bytes at once and reconnects): a real call still gets a slot, the
    oldest of them gives it up."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    settings = agi_settings(max_sessions=3, environment_timeout=60)
    async with (
        AgiServer(settings, {"probe": probe}, eviction_grace=60) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        flood = [await stack.enter_async_context(asterisk_connection(server)) for _ in range(3)]
        for connection in flood:
            await connection.send(b"agi_network: yes\n")
        async with asterisk_connection(server) as call:
            await call.send(env_bytes("probe", uniqueid="real"))
            assert await call.closed_by_server()
        assert served == ["real"]
        assert await flood[0].closed_by_server()

    evicted = [r for r in agi_logs.records if "evicted at max_sessions" in r.getMessage()]
    assert len(evicted) == 1
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


# -- the loop behind: connections whose bytes the server has not read yet ----------------


def connect_now(server: AgiServer, data: bytes = b"") -> socket.socket:
    """A connection made, and ``data`` sent, before the server's loop runs again.

    A blocking connect completes in the kernel (the listening socket's backlog) without
    the server accepting it, and the bytes wait in the kernel's buffer: this is what the
    server finds when its loop falls behind, e.g. on a machine busy with something else.
    Connections made this way in a row are accepted in one burst, before any is read.
    """
    sock = socket.create_connection(("127.0.0.1", server.port))
    if data:
        sock.sendall(data)
    return sock


async def served_or_closed(sock: socket.socket) -> bytes:
    """What the server sent before closing ``sock`` (b"" if it closed or reset it at once)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(WAIT):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def reached_the_server(server: AgiServer, probes: list[str]) -> None:
    """Return once every byte sent so far has been read by the server: a complete call
    sent after them has been served (the loop reads what is readable in arrival order)."""
    served = len(probes)
    async with asterisk_connection(server) as barrier:
        await barrier.send(env_bytes("probe", uniqueid=f"barrier-{served}"))
        assert await barrier.closed_by_server()
    assert len(probes) == served + 1


async def test_a_real_call_is_admitted_behind_connections_with_unread_partial_blocks(
    agi_logs, loop_errors
):
    """The loop is behind: 33 connections have sent the start of an environment that the
    server has not read, then idle ones fill the cap, then a real call arrives. The idle
    connections are the ones to go, however many unread connections come first."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    settings = agi_settings(max_sessions=40, environment_timeout=60)
    async with AgiServer(settings, {"probe": probe}) as server:
        partial = env_bytes("probe", uniqueid="partial")[:40]
        sockets = [connect_now(server, partial) for _ in range(33)]
        sockets += [connect_now(server) for _ in range(7)]
        real = connect_now(server, env_bytes("probe", uniqueid="real"))
        try:
            await served_or_closed(real)
            assert served == ["real"]
        finally:
            for sock in sockets:
                sock.close()
    assert loop_errors == []


async def test_a_real_call_whose_block_the_server_read_in_part_is_not_evicted(
    agi_logs, loop_errors
):
    """Asterisk writes the environment a line at a time: the server may have read the
    first lines when a burst of idle connections arrives at the cap. The call is not the
    one to go: it is neither silent nor stalled."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    block = env_bytes("probe", uniqueid="real")
    settings = agi_settings(max_sessions=5, environment_timeout=60)
    async with AgiServer(settings, {"probe": probe}) as server:
        real = connect_now(server, block[:60])
        await reached_the_server(server, served)
        idle = [connect_now(server) for _ in range(8)]
        try:
            # The burst took the cap: the oldest idle connection had to go.
            assert await served_or_closed(idle[0]) == b""
            real.sendall(block[60:])
            await served_or_closed(real)
            assert served[1:] == ["real"]
        finally:
            for sock in idle:
                sock.close()
    assert loop_errors == []


async def test_a_real_call_whose_block_waits_unread_is_not_evicted(agi_logs, loop_errors):
    """The whole environment is in the kernel's buffer, unread, when a burst of idle
    connections arrives at the cap: the server reads it before choosing whom to evict."""
    served: list[str] = []

    async def probe(session: AgiSession) -> None:
        served.append(session.environment.uniqueid)

    settings = agi_settings(max_sessions=5, environment_timeout=60)
    async with AgiServer(settings, {"probe": probe}) as server:
        real = connect_now(server, env_bytes("probe", uniqueid="real"))
        idle = [connect_now(server) for _ in range(8)]
        try:
            await served_or_closed(real)
            assert served == ["real"]
        finally:
            for sock in idle:
                sock.close()
    assert loop_errors == []
