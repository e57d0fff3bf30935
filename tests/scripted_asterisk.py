"""Asterisk's side of FastAGI for unit tests, played over loopback TCP against the real
:class:`~fastagi.agi.server.AgiServer`.

The scripted Asterisk connects, sends its environment block, then answers each command
line with the next scripted reply.  The flow under test runs inside the server exactly as
in production: the server's protocol object feeds every received byte to
``AgiSession.feed_data`` and the session writes its commands to the socket.  Whatever the
flow raised is raised again in the test body, so the assertions stay there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastagi.agi.protocol import AgiConnection, Environment, ProtocolError
from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiEnvironment, AgiSession
from fastagi.config import AgiSettings

STALL = None  # a scripted "reply" that never comes
CLOSE = b""  # instead of replying, Asterisk closes its side (as after a hang-up)
# An upper bound for a whole scripted call: every reply is on its way at once.
WAIT = 10.0

# A reply; a function is called with the command line when it arrives and its result
# is the reply (a test acts at that moment: releases a slow render, say).
Reply = bytes | str | None | Callable[[str], "bytes | str | None"]


def _script_of(greeting: bytes) -> str:
    """The route the server will pick for ``greeting`` ("" when it is not a whole block)."""
    connection = AgiConnection()
    connection.receive_data(greeting)
    try:
        event = connection.next_event()
    except ProtocolError:
        return ""
    if not isinstance(event, Environment):
        return ""
    return AgiEnvironment.from_variables(event.variables).script


class ScriptedAsterisk:
    """One FastAGI connection from Asterisk, with its replies scripted in order.

    ``sent`` keeps every command line the server wrote (``commands``: decoded, without the
    newline).  A reply is bytes or str, or a function of the command line that returns
    one; :data:`STALL` sends nothing; :data:`CLOSE`, or the end of the script, closes
    Asterisk's side of the connection.
    """

    def __init__(self, *replies: Reply, greeting: bytes) -> None:
        self.sent: list[bytes] = []
        self.something_sent = asyncio.Event()
        self._replies: deque[Reply] = deque(replies)
        self._greeting = greeting
        self._after_greeting: list[bytes] = []
        self._script = _script_of(greeting)
        # The client's own address, as the server sees it, and the server's (host:port).
        self.address = ""
        self.server_address = ""
        self._closed = False

    @property
    def commands(self) -> list[str]:
        return [line.decode().rstrip("\n") for line in self.sent]

    @property
    def unused(self) -> int:
        return len(self._replies)

    def feed(self, data: bytes) -> None:
        """Send ``data`` right after the greeting; b"" closes Asterisk's side there."""
        self._after_greeting.append(data)

    async def run(self, flow: Callable[[AgiSession], Awaitable[None]], **settings: Any) -> None:
        """Serve one call to ``flow`` through AgiServer; return once the server has closed
        the connection, raising whatever the flow raised."""
        error: list[BaseException] = []

        async def route(session: AgiSession) -> None:
            try:
                await flow(session)
            except BaseException as exc:
                error.append(exc)
                raise

        async with self._server({self._script: route}, **settings) as server:
            await self._converse(server)
            await server.wait_idle()
        if error:
            raise error[0]

    @contextlib.asynccontextmanager
    async def session(self, **settings: Any) -> AsyncIterator[AgiSession]:
        """The call's session, served by AgiServer, held open until the block ends."""
        handed: asyncio.Future[AgiSession] = asyncio.get_running_loop().create_future()
        done = asyncio.Event()

        async def hold(session: AgiSession) -> None:
            handed.set_result(session)
            await done.wait()

        async with self._server({self._script: hold}, **settings) as server:
            conversation = asyncio.create_task(self._converse(server))
            try:
                # The flow has the session, or the server closed the connection first.
                either: set[asyncio.Future[Any]] = {handed, conversation}
                async with asyncio.timeout(WAIT):
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not handed.done():
                    raise AssertionError("the server closed the connection before the flow ran")
                yield handed.result()
            finally:
                done.set()
                await conversation
                await server.wait_idle()

    @contextlib.asynccontextmanager
    async def _server(self, routes: dict[str, Any], **settings: Any) -> AsyncIterator[AgiServer]:
        values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0}
        values.update(settings)
        async with AgiServer(AgiSettings(**values), routes) as server:
            yield server

    async def _converse(self, server: AgiServer) -> None:
        """Play Asterisk until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            host, port = writer.get_extra_info("sockname")[:2]
            self.address = f"{host}:{port}"
            host, port = writer.get_extra_info("peername")[:2]
            self.server_address = f"{host}:{port}"
            try:
                writer.write(self._greeting)
                for data in self._after_greeting:
                    self._send(writer, data)
                while line := await reader.readline():
                    self.sent.append(line)
                    self.something_sent.set()
                    reply = self._replies.popleft() if self._replies else CLOSE
                    if callable(reply):
                        reply = reply(line.decode().rstrip("\n"))
                    if reply is not STALL:
                        self._send(writer, reply.encode() if isinstance(reply, str) else reply)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self._closed:
            return  # Asterisk's side is closed: nothing more goes out
        if data:
            writer.write(data)
        else:
            writer.write_eof()
            self._closed = True
