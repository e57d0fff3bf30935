"""AgiServer on 127.0.0.1 with a real asyncio TCP client playing Asterisk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastagi.agi.errors import AgiHangup, AgiTimeout
from fastagi.agi.server import AgiServer, Flow
from fastagi.agi.session import AgiSession
from fastagi.config import AgiSettings

WAIT = 5.0  # generous upper bound for anything that should happen "at once"


def env_bytes(script: str = "probe?source=dialplan", *args: str, uniqueid: str = "1.1") -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4573/{script}",
        "agi_channel: PJSIP/201-00000001",
        "agi_language: en",
        f"agi_uniqueid: {uniqueid}",
        "agi_callerid: 201",
        "agi_calleridname: unknown",
        "agi_context: fastagi-panic-probe",
        "agi_extension: s",
        "agi_priority: 4",
        "agi_accountcode: ",
        *(f"agi_arg_{n}: {arg}" for n, arg in enumerate(args, start=1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


def agi_settings(**overrides: Any) -> AgiSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "environment_timeout": WAIT,
        "reply_timeout": WAIT,
        "shutdown_grace": 1.0,
    }
    values.update(overrides)
    return AgiSettings(**values)


class Asterisk:
    """One FastAGI connection, from Asterisk's side."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readline()

    async def closed_by_server(self) -> bool:
        """True when the server closes (EOF or reset) within WAIT, with no more bytes."""
        try:
            async with asyncio.timeout(WAIT):
                data = await self.reader.read(1)
        except ConnectionResetError:
            return True
        return data == b""


@contextlib.asynccontextmanager
async def asterisk_connection(server: AgiServer) -> AsyncIterator[Asterisk]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield Asterisk(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Whatever reaches the event loop's exception handler during the test."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


@pytest.fixture
def agi_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="fastagi")
    return caplog


def session_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("fastagi.agi") and hasattr(r, "peer")]


# -- routing ------------------------------------------------------------------------


async def test_routes_on_the_script_path_with_query_and_args(agi_logs, loop_errors):
    seen: list[tuple[str, dict[str, str], tuple[str, ...], str]] = []

    async def probe(session: AgiSession) -> None:
        env = session.environment
        seen.append((env.script, dict(env.query), env.args, session.peer))
        await session.answer()
        await session.set_variable("FASTAGI_STATUS", "OK")

    async with AgiServer(agi_settings(), {"probe": probe}) as server:
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(env_bytes("probe?source=dialplan&x=", "201", "a b"))
            assert await asterisk.command() == b"ANSWER\n"
            await asterisk.send(b"200 result=0\n")
            assert await asterisk.command() == b"SET VARIABLE FASTAGI_STATUS OK\n"
            await asterisk.send(b"200 result=1\n")
            assert await asterisk.closed_by_server()
        await server.wait_idle()

    ((script, query, args, peer),) = seen
    assert (script, query, args) == ("probe", {"source": "dialplan", "x": ""}, ("201", "a b"))
    assert peer.startswith("127.0.0.1:")
    records = session_records(agi_logs)
    assert records, "the session logged nothing"
    assert all(r.__dict__["agi_uniqueid"] in {"", "1.1"} for r in records)
    assert all(r.__dict__["peer"] == peer for r in records)
    assert any(
        r.__dict__["agi_uniqueid"] == "1.1" and "finished" in r.getMessage() for r in records
    )
    assert loop_errors == []


@pytest.mark.parametrize("script", ["nope", "probe/extra", "Probe", ""])
async def test_unknown_route_transcript(script, agi_logs):
    called: list[str] = []

    async def probe(session: AgiSession) -> None:
        called.append("probe")

    async with (
        AgiServer(agi_settings(), {"probe": probe}) as server,
        asterisk_connection(server) as asterisk,
    ):
        await asterisk.send(env_bytes(script))
        got = [await asterisk.command()]
        await asterisk.send(b"200 result=1\n")
        got.append(await asterisk.command())
        await asterisk.send(b"200 result=1\n")
        assert await asterisk.closed_by_server()

    verbose = f'VERBOSE "fastagi: no route for {script}" 1\n'.encode()
    assert got == [verbose, b"SET VARIABLE FASTAGI_STATUS NOROUTE\n"]
    assert called == []
    assert any("no route" in r.getMessage() for r in session_records(agi_logs))


async def test_socket_is_closed_as_soon_as_the_flow_returns():
    async def quick(session: AgiSession) -> None:
        await session.answer()

    async with (
        AgiServer(agi_settings(reply_timeout=600), {"quick": quick}) as server,
        asterisk_connection(server) as asterisk,
    ):
        await asterisk.send(env_bytes("quick"))
        assert await asterisk.command() == b"ANSWER\n"
        await asterisk.send(b"200 result=0\n")
        # We keep our side open, as Asterisk does: only the server can end this.
        assert await asterisk.closed_by_server()


# -- flows that fail --------------------------------------------------------------------


async def test_flow_exception_is_logged_and_status_set(agi_logs, loop_errors):
    async def broken(session: AgiSession) -> None:
        await session.answer()
        raise RuntimeError("boom")

    async with (
        AgiServer(agi_settings(), {"broken": broken}) as server,
        asterisk_connection(server) as asterisk,
    ):
        await asterisk.send(env_bytes("broken", uniqueid="77.7"))
        assert await asterisk.command() == b"ANSWER\n"
        await asterisk.send(b"200 result=0\n")
        assert await asterisk.command() == b"SET VARIABLE FASTAGI_STATUS ERROR\n"
        await asterisk.send(b"200 result=1\n")
        assert await asterisk.closed_by_server()

    (failure,) = [r for r in agi_logs.records if r.exc_info and "failed" in r.getMessage()]
    assert failure.levelno == logging.ERROR
    assert failure.__dict__["agi_uniqueid"] == "77.7"
    assert str(failure.exc_info[1]) == "boom"
    assert loop_errors == []


async def test_flow_hangup_is_normal_and_sends_nothing_more(agi_logs):
    async def caller_leaves(session: AgiSession) -> None:
        await session.stream_file("custom/panic-armed")

    async with (
        AgiServer(agi_settings(), {"panic": caller_leaves}) as server,
        asterisk_connection(server) as asterisk,
    ):
        await asterisk.send(env_bytes("panic"))
        assert await asterisk.command() == b'STREAM FILE custom/panic-armed ""\n'
        await asterisk.send(b"HANGUP\n200 result=-1 endpos=0\n")
        assert await asterisk.closed_by_server()

    assert not [r for r in agi_logs.records if r.levelno >= logging.WARNING]
    assert any("hangup" in r.getMessage() for r in session_records(agi_logs))


async def test_reply_timeout_in_a_flow_closes_the_connection(agi_logs):
    errors: list[BaseException] = []

    async def waits(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiTimeout as exc:
            errors.append(exc)
            raise

    async with (
        AgiServer(agi_settings(reply_timeout=0.2), {"waits": waits}) as server,
        asterisk_connection(server) as asterisk,
    ):
        await asterisk.send(env_bytes("waits"))
        assert await asterisk.command() == b"ANSWER\n"
        # No reply, ever; and no status command after the timeout (out of step).
        assert await asterisk.closed_by_server()

    assert len(errors) == 1


# -- hostile or broken peers -------------------------------------------------------------


async def test_garbage_client_costs_one_task(agi_logs, loop_errors):
    called: list[str] = []

    async def probe(session: AgiSession) -> None:
        called.append("probe")

    async with AgiServer(agi_settings(), {"probe": probe}) as server:
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n")
            assert await asterisk.closed_by_server()
        await server.wait_idle()
        assert server.active_sessions == 0

    assert called == []
    assert any("bad environment" in r.getMessage() for r in session_records(agi_logs))
    assert loop_errors == []


async def test_stalling_client_is_closed_after_environment_timeout(agi_logs, loop_errors):
    async with AgiServer(agi_settings(environment_timeout=0.2), {}) as server:
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(b"agi_network: yes\nagi_network_scr")
            assert await asterisk.closed_by_server()
        await server.wait_idle()

    assert any("no complete environment" in r.getMessage() for r in session_records(agi_logs))
    assert loop_errors == []


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (60, "connection closed in the middle of a line"),
        (len(env_bytes("probe")) - 1, "connection closed before the end of the environment"),
    ],
)
async def test_disconnect_mid_environment(cut, reason, agi_logs, loop_errors):
    called: list[str] = []

    async def probe(session: AgiSession) -> None:
        called.append("probe")

    async with AgiServer(agi_settings(), {"probe": probe}) as server:
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(env_bytes("probe")[:cut])
            asterisk.writer.write_eof()  # Asterisk's side is gone, mid-line
            assert await asterisk.closed_by_server()
        await server.wait_idle()
        assert server.active_sessions == 0

    assert called == []
    messages = [r.getMessage() for r in session_records(agi_logs)]
    assert messages == [f"closing connection: bad environment: {reason}"]
    assert loop_errors == []


async def test_allow_list_refuses_without_reading(agi_logs):
    called: list[str] = []

    async def probe(session: AgiSession) -> None:
        called.append("probe")

    # A server that read the environment would wait environment_timeout (60 s) for it.
    settings = agi_settings(allowed_networks=["10.0.0.0/8", "::1/128"], environment_timeout=60)
    async with (
        AgiServer(settings, {"probe": probe}) as server,
        asterisk_connection(server) as asterisk,
    ):
        assert await asterisk.closed_by_server()
        assert server.active_sessions == 0

    assert called == []
    (refusal,) = [r for r in agi_logs.records if "allowed_networks" in r.getMessage()]
    assert refusal.levelno == logging.WARNING
    assert refusal.__dict__["peer"].startswith("127.0.0.1:")


async def test_session_cap_refuses_the_connection_over_the_cap(agi_logs):
    entered = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    async def holds(session: AgiSession) -> None:
        runs.append(session.environment.uniqueid)
        entered.set()
        await release.wait()

    async with AgiServer(agi_settings(max_sessions=1), {"holds": holds}) as server:
        async with asterisk_connection(server) as first:
            await first.send(env_bytes("holds", uniqueid="first"))
            await entered.wait()

            async with asterisk_connection(server) as second:
                assert await second.closed_by_server()

            release.set()
            assert await first.closed_by_server()
        await server.wait_idle()

        # The cap counts running sessions: with the first gone, a new one is served.
        entered.clear()
        async with asterisk_connection(server) as third:
            await third.send(env_bytes("holds", uniqueid="third"))
            await entered.wait()
            assert await third.closed_by_server()

    assert runs == ["first", "third"]
    assert any("max_sessions" in r.getMessage() for r in agi_logs.records)


# -- shutdown -----------------------------------------------------------------------------


async def test_graceful_close_lets_a_running_flow_finish():
    entered = asyncio.Event()
    release = asyncio.Event()
    outcome: list[str] = []

    async def slow(session: AgiSession) -> None:
        entered.set()
        try:
            await release.wait()
            await session.set_variable("DONE", "1")
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = AgiServer(agi_settings(), {"slow": slow})
    await server.start()
    port = server.port
    async with asterisk_connection(server) as asterisk:
        await asterisk.send(env_bytes("slow"))
        await entered.wait()

        closer = asyncio.create_task(server.close(grace=WAIT))
        await asyncio.sleep(0)  # close() runs to its first await: the listener is shut
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

        release.set()
        assert await asterisk.command() == b"SET VARIABLE DONE 1\n"
        await asterisk.send(b"200 result=1\n")
        assert await asterisk.closed_by_server()
        async with asyncio.timeout(WAIT):
            await closer

    assert outcome == ["finished"]
    assert server.active_sessions == 0


async def test_close_cancels_a_stuck_flow_after_the_grace_period():
    entered = asyncio.Event()
    outcome: list[str] = []

    async def stuck(session: AgiSession) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = AgiServer(agi_settings(), {"stuck": stuck})
    await server.start()
    async with asterisk_connection(server) as asterisk:
        await asterisk.send(env_bytes("stuck"))
        await entered.wait()

        async with asyncio.timeout(WAIT):
            await server.close(grace=0.1)

        assert await asterisk.closed_by_server()
    assert outcome == ["cancelled"]
    assert server.active_sessions == 0


async def test_serve_forever_returns_when_closed():
    server = AgiServer(agi_settings(), {})
    await server.start()
    serving = asyncio.create_task(server.serve_forever())

    async with asyncio.timeout(WAIT):
        await server.close()
        await serving

    assert serving.result() is None


async def test_cancelling_serve_forever_closes_the_server():
    server = AgiServer(agi_settings(), {})
    serving = asyncio.create_task(server.serve_forever())
    async with asyncio.timeout(WAIT):
        await server.close()  # before serve_forever even ran: it must not hang
        await serving

    other = AgiServer(agi_settings(), {})
    await other.start()
    port = other.port
    serving = asyncio.create_task(other.serve_forever())
    await asyncio.sleep(0)  # let serve_forever() reach its wait
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_flow_type_accepts_plain_async_functions():
    async def flow(session: AgiSession) -> None:
        raise AgiHangup("gone")

    routes: dict[str, Flow] = {"x": flow}
    server = AgiServer(agi_settings(), routes)

    with pytest.raises(RuntimeError):
        _ = server.port
    async with server:
        assert server.port > 0
