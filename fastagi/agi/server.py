"""The asyncio FastAGI listener: allow-list, session cap, routing, timeouts, shutdown.

A thin shell: each connection is an :class:`asyncio.Protocol` whose ``data_received``
feeds the sans-IO core directly, first for the environment block, then through
:class:`~fastagi.agi.session.AgiSession`, which resolves the pending command's reply.
The allow-list and session cap are checked in ``connection_made``, before anything is
read or any task exists (a refused socket is reset at once: no read, no task, no
TIME_WAIT); an accepted connection gets one task, which waits for the
environment, runs the flow registered for the script path, and closes the socket the
moment the flow is done (Asterisk holds the channel until we close).

At the session cap, a new connection takes the slot of one still waiting for its
environment, and is refused only when every slot holds a call whose environment is
complete.  Asterisk writes the whole block the moment it connects, so a waiting
connection is a call a few milliseconds old or not Asterisk at all (an idle socket, a
byte-a-minute sender, a flood).  Whom to evict, oldest first in each case: one that has
sent nothing for ``eviction_grace``; else one whose block began that long ago and is
still incomplete; else one that has sent nothing; else one that has begun its block.
The choice never rests on what the loop happens to have read: when the loop is behind
(a busy machine), a real call's block may wait in the kernel's buffer, so each
candidate is read before it is chosen, and a block found complete starts its flow
instead.  A call that has sent its environment is therefore never evicted, and a flood
of any kind cannot lock calls out: a newcomer always finds a slot it may take.
Whatever a peer does (garbage, stalling, vanishing) ends that task and nothing else.
The server uses whichever event loop is running; the CLI installs uvloop when it is
available.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, cast

from fastagi.agi.errors import AgiError, AgiHangup, AgiProtocolError, AgiTimeout
from fastagi.agi.protocol import (
    DEFAULT_MAX_ENVIRONMENT_SIZE,
    NEED_DATA,
    AgiConnection,
    Environment,
    ProtocolError,
)
from fastagi.agi.session import AgiEnvironment, AgiSession, Logger
from fastagi.agi.stats import AgiStats
from fastagi.config import AgiSettings

__all__ = ["AgiServer", "Flow"]

Flow = Callable[[AgiSession], Awaitable[None]]

_LOG = logging.getLogger("fastagi.agi.server")
# A status write after a failure is a courtesy to the dialplan, not worth a long wait.
_STATUS_TIMEOUT = 5.0
# How long a closing socket may take to flush before it is aborted.
_CLOSE_TIMEOUT = 1.0
# Allow-list decisions remembered per peer host: Asterisk connects from a handful of
# addresses, and the bound only matters when something scans us.
_ALLOW_CACHE_SIZE = 1024
# Asterisk writes its whole environment block within milliseconds of connecting; a
# connection that has sent nothing, or not finished its block, this long after is not
# Asterisk, and goes first when a new connection needs its slot.
EVICTION_GRACE = 1.0
# What one read of a waiting connection takes from the kernel: the environment's limit.
_READ_SIZE = DEFAULT_MAX_ENVIRONMENT_SIZE

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _format_peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)


def _peer_address(peername: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(peername, tuple) or not peername:
        return None
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        return address.ipv4_mapped
    return address


def _writer(transport: asyncio.Transport | None) -> Callable[[bytes], None]:
    """How the session writes: to the transport, refused once it is closing.

    A closure over the transport rather than a method of the protocol, so that the session
    and the protocol (which holds the session) form no reference cycle: with hundreds of
    calls a second, each cycle would wait for the garbage collector instead of going the
    moment the call ends.
    """
    assert transport is not None

    def write(data: bytes) -> None:
        if transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)

    return write


class _AgiProtocol(asyncio.Protocol):
    """One connection: received bytes go straight into the sans-IO core.

    Until the environment is complete the bytes feed the core here; then ``ready``
    resolves to the session and every later byte goes to ``AgiSession.feed_data``.
    """

    def __init__(self, server: AgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        # Kept, not asked for: on CPython 3.11 asyncio.get_running_loop() makes a getpid()
        # system call (to notice a fork), once per call of it.
        self.loop = loop
        self.peer = ""
        self._transport: asyncio.Transport | None = None
        self._connection: AgiConnection | None = None  # None: refused
        self._session: AgiSession | None = None
        # The session once the environment is read, or the AgiError that ended it first.
        self.ready: asyncio.Future[AgiSession] | None = None
        self._environment_timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        # When the server admitted the connection, and when its first byte was read (loop
        # time): the ages the eviction rule goes by.
        self.admitted_at = 0.0
        self.first_byte_at: float | None = None
        # Set when the environment failed (evicted, timed out, garbled, closed): the slot
        # is free while the socket closes.
        self.ending = False
        self.evicted = False  # by the server, for the slot (counted apart: AgiStats)

    def read_waiting_bytes(self) -> None:
        """Read now what the kernel holds from the peer, without waiting for the loop to
        get to this socket: a complete environment then starts its flow, a garbled or
        closed one ends, a silent one stays silent.

        The bytes go through ``data_received`` exactly as the transport's would; the
        transport's own read later finds nothing (EAGAIN) or what came after.
        """
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is None:
            return
        # A socket object of our own on a duplicate of the descriptor: uvloop's socket
        # stand-in has no recv().
        try:
            reader = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return  # already closed: the transport reports the loss
        with reader:
            try:
                data = reader.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return  # nothing waiting
            except OSError:
                data = b""  # reset: gone, as good as closed
        if data:
            self.data_received(data)
        else:
            self._on_eof()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.peer = _format_peer(peername)
        if not self._server._admit(self, peername):
            # Reset, not close: nothing was read, and a refused flood must not leave
            # thousands of sockets in TIME_WAIT or FIN_WAIT behind.
            self._transport.abort()
            return
        loop = self.loop
        self._connection = AgiConnection()
        self.ready = loop.create_future()
        timeout = self._server._settings.environment_timeout
        self._environment_timer = loop.call_later(timeout, self._environment_timed_out, timeout)

    def data_received(self, data: bytes) -> None:
        if self._session is not None:
            self._session.feed_data(data)
        elif self._connection is not None:
            self._receive_environment(data)

    def eof_received(self) -> bool:
        self._on_eof()
        return True  # keep our side open: the flow may still be writing; we close later

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._on_eof()
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    # -- the environment ----------------------------------------------------------------

    def _receive_environment(self, data: bytes) -> None:
        assert self._connection is not None
        assert self.ready is not None
        if self.ready.done():
            return  # already failed: the task is closing the connection
        if data and self.first_byte_at is None:
            self.first_byte_at = self.loop.time()
            self._server._waiting.heard_from(self)
        connection = self._connection
        try:
            connection.receive_data(data)
            event = connection.next_event()
        except ProtocolError as exc:
            self._fail(AgiProtocolError(f"bad environment: {exc}", error=exc))
            return
        if event is NEED_DATA:
            return
        # In the ENVIRONMENT state the core yields nothing but the environment or an error.
        assert isinstance(event, Environment), event
        assert self._environment_timer is not None
        self._environment_timer.cancel()
        self._server._environment_done(self)
        session = AgiSession(
            _writer(self._transport),
            connection,
            AgiEnvironment.from_variables(event.variables),
            peer=self.peer,
            reply_timeout=self._server._settings.reply_timeout,
            latency=self._server.stats.latency,
            loop=self.loop,
        )
        self._session = session
        self.ready.set_result(session)
        session.feed_data(b"")  # whatever arrived behind the blank line (a HANGUP, say)

    def _on_eof(self) -> None:
        if self._session is not None:
            self._session.feed_eof()
        elif self._connection is not None:
            self._receive_environment(b"")

    def _environment_timed_out(self, timeout: float) -> None:
        self._fail(AgiTimeout(f"no complete environment within {timeout} s"))

    def evict(self) -> None:
        """Give up on this connection's environment: the server needs the slot."""
        self.evicted = True
        self._fail(AgiProtocolError("evicted at max_sessions before its environment was complete"))

    def _fail(self, error: AgiError) -> None:
        assert self.ready is not None
        assert self._environment_timer is not None
        self._environment_timer.cancel()
        self._server._environment_done(self)
        if not self.ready.done():
            self.ending = True
            self._server._ending += 1
            self.ready.set_exception(error)

    # -- what the server uses -----------------------------------------------------------

    async def close(self) -> None:
        """Close the socket; wait (boundedly) only if unsent bytes remain."""
        transport = self._transport
        assert transport is not None
        # close() first and synchronously: even if this task is cancelled while waiting,
        # the socket is on its way down.
        transport.close()
        if self._lost or not transport.get_write_buffer_size():
            return
        loop = asyncio.get_running_loop()
        self._lost_waiter = loop.create_future()
        # A peer that does not read keeps our send buffer full; do not wait for it.
        abort = loop.call_later(_CLOSE_TIMEOUT, transport.abort)
        try:
            await self._lost_waiter
        finally:
            abort.cancel()


class _WaitingRoom:
    """The admitted connections whose environment is not complete yet, and which of them
    gives up its slot when a new connection arrives at the session cap.

    Two queues, each oldest first: connections that have sent nothing (by admission), and
    connections that have begun a block (by first byte).  A connection moves from the
    first to the second on its first byte and leaves both when its block is complete or
    it fails.
    """

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._silent: dict[_AgiProtocol, None] = {}
        self._begun: dict[_AgiProtocol, None] = {}

    def __iter__(self) -> Iterator[_AgiProtocol]:
        yield from self._silent
        yield from self._begun

    def admit(self, protocol: _AgiProtocol) -> None:
        self._silent[protocol] = None

    def heard_from(self, protocol: _AgiProtocol) -> None:
        if protocol in self._silent:
            del self._silent[protocol]
            self._begun[protocol] = None

    def leave(self, protocol: _AgiProtocol) -> None:
        self._silent.pop(protocol, None)
        self._begun.pop(protocol, None)

    def victim(self, now: float) -> _AgiProtocol | None:
        """Whom to evict: the oldest silent connection if it has been silent for the
        grace, else the oldest begun one if its block began that long ago, else the
        oldest silent one, else the oldest begun one; None when nobody waits.

        Each candidate is read first (``read_waiting_bytes``), which may move it to the
        other queue, start its flow or end it; then the next one is looked at.  A read
        either leaves the candidate where it was (it is chosen) or moves it on for good,
        so the work per new connection stays small however long the queues are.
        """
        silent = self._oldest(self._silent)
        if silent is not None and now - silent.admitted_at >= self._grace:
            return silent
        begun = self._oldest(self._begun)
        if begun is not None and now - _first_byte_at(begun) >= self._grace:
            return begun
        return silent if silent is not None else begun

    @staticmethod
    def _oldest(queue: dict[_AgiProtocol, None]) -> _AgiProtocol | None:
        while queue:
            protocol = next(iter(queue))
            protocol.read_waiting_bytes()
            if protocol in queue:
                return protocol
        return None


def _first_byte_at(protocol: _AgiProtocol) -> float:
    assert protocol.first_byte_at is not None
    return protocol.first_byte_at


class AgiServer:
    """Serve FastAGI on ``settings.host:settings.port``, routing on the script path.

    ``routes`` maps the path of the AGI URL (``agi://host/panic?x=1`` routes as
    ``panic``) to a flow.  Use ``async with AgiServer(...)`` or ``start()`` / ``close()``.
    ``eviction_grace``: see the module's docstring (the default suits Asterisk).
    """

    def __init__(
        self,
        settings: AgiSettings,
        routes: Mapping[str, Flow],
        *,
        logger: logging.Logger | None = None,
        eviction_grace: float = EVICTION_GRACE,
        stats: AgiStats | None = None,
    ) -> None:
        self._settings = settings
        self.stats = stats if stats is not None else AgiStats()
        self._routes = dict(routes)
        self._log = logger or _LOG
        self._networks: list[IpNetwork] = [
            ipaddress.ip_network(network, strict=False) for network in settings.allowed_networks
        ]
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = asyncio.Event()
        self._allow_cache: dict[str, bool] = {}
        self._waiting = _WaitingRoom(eviction_grace)
        # Connections whose environment failed (evicted among them) and whose task has not
        # finished closing them: their slots are free already.
        self._ending = 0

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting.  ``settings.port`` 0 picks a free port."""
        if self._server is not None or self._closing:
            raise RuntimeError("AgiServer already started or closed")
        # The default backlog (100) overflows when hundreds of calls arrive at once, and
        # Asterisk gives up on a connect after 2 s, well before the kernel's SYN retries.
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AgiProtocol(self, loop),
            self._settings.host,
            self._settings.port,
            backlog=self._settings.listen_backlog,
        )
        self._log.info(
            "FastAGI listening on %s:%d (routes: %s)",
            self._settings.host,
            self.port,
            ", ".join(sorted(self._routes)) or "none",
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("AgiServer is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_sessions(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Return once no connection is being served."""
        await self._idle.wait()

    async def serve_forever(self) -> None:
        """Run until :meth:`close` finishes (started here if needed).

        Cancelling this closes the server with no grace period and re-raises.
        """
        if self._closing:
            await self._closed.wait()
            return
        if self._server is None:
            await self.start()
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            await self.close(grace=0)
            raise

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, give running flows ``grace`` seconds, then cancel the rest."""
        if grace is None:
            grace = self._settings.shutdown_grace
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Connections accepted just before close() may not have started their tasks.
        await asyncio.sleep(0)
        running = set(self._tasks)
        if running:
            self._log.info("closing: waiting up to %.1f s for %d sessions", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace) if grace > 0 else ((), running)
            if pending:
                self._log.warning("closing: cancelling %d sessions", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._log.info("FastAGI server closed")
        self._closed.set()

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- one connection ---------------------------------------------------------------

    def _admit(self, protocol: _AgiProtocol, peername: Any) -> bool:
        """Refuse or start serving a new connection; called before anything is read."""
        if self._closing:
            self.stats.refused += 1
            self._peer_log(protocol.peer).info("refused connection: server is shutting down")
            return False
        if not self._allowed(peername):
            self.stats.refused += 1
            self._peer_log(protocol.peer).warning(
                "refused connection: %s is not in allowed_networks", protocol.peer
            )
            return False
        loop = protocol.loop
        if self._at_cap():
            victim = self._waiting.victim(loop.time())
            # Reading the candidates may have ended some (garbled, gone): room enough now.
            if self._at_cap():
                if victim is None:
                    self.stats.refused += 1
                    self._peer_log(protocol.peer).warning(
                        "refused connection: %d sessions running (max_sessions)", len(self._tasks)
                    )
                    return False
                self.stats.evicted += 1
                victim.evict()
        task = loop.create_task(self._serve_connection(protocol), name=f"fastagi {protocol.peer}")
        protocol.admitted_at = loop.time()
        self._waiting.admit(protocol)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._on_task_done)
        return True

    def _at_cap(self) -> bool:
        return len(self._tasks) - self._ending >= self._settings.max_sessions

    def _environment_done(self, protocol: _AgiProtocol) -> None:
        self._waiting.leave(protocol)

    def _allowed(self, peername: Any) -> bool:
        host = peername[0] if isinstance(peername, tuple) and peername else None
        allowed = self._allow_cache.get(host) if isinstance(host, str) else None
        if allowed is None:
            address = _peer_address(peername)
            allowed = address is not None and any(address in net for net in self._networks)
            if isinstance(host, str):
                if len(self._allow_cache) >= _ALLOW_CACHE_SIZE:
                    self._allow_cache.clear()
                self._allow_cache[host] = allowed
        return allowed

    def _peer_log(self, peer: str) -> Logger:
        # Only for connections that end before they have a session (and its logger).
        return logging.LoggerAdapter(self._log, {"agi_uniqueid": "", "peer": peer})

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # _serve_connection catches everything; this is the last line of defence so
            # nothing ever reaches the loop's exception handler.
            self._log.error("session task failed", exc_info=exc)

    async def _serve_connection(self, protocol: _AgiProtocol) -> None:
        assert protocol.ready is not None
        try:
            try:
                session = await protocol.ready
            except AgiError as exc:
                # A stalled, garbled or vanished peer: AgiTimeout or AgiProtocolError.
                if not protocol.evicted:
                    self.stats.failed += 1
                self._peer_log(protocol.peer).warning("closing connection: %s", exc)
                return
            script = session.environment.script
            flow = self._routes.get(script)
            self.stats.session_started(script if flow is not None else "(no route)")
            if flow is None:
                await self._no_route(session)
            else:
                await self._run_flow(flow, session)
        except Exception:
            self._peer_log(protocol.peer).exception("unexpected error serving the connection")
        finally:
            try:
                await protocol.close()
            finally:
                if protocol.ending:
                    self._ending -= 1

    async def _run_flow(self, flow: Flow, session: AgiSession) -> None:
        log = session.log
        script = session.environment.script
        # DEBUG, both: two lines per call at INFO were a tenth of the server's CPU in a
        # storm of calls (docs/performance.md); what a call did is in its history, and
        # its failures below stay loud.
        log.debug("flow %r started for %s", script, session.environment.channel)
        try:
            await flow(session)
        except AgiHangup as exc:
            log.info("flow %r ended by hangup: %s", script, exc)
        except asyncio.CancelledError:
            log.warning("flow %r cancelled", script)
            raise
        except Exception:
            log.exception("flow %r failed", script)
            await self._best_effort(session, ("SET", "VARIABLE", "FASTAGI_STATUS", "ERROR"))
        else:
            log.debug("flow %r finished", script)

    async def _no_route(self, session: AgiSession) -> None:
        script = session.environment.script
        session.log.warning("no route for script %r", script)
        if await self._best_effort(session, ("VERBOSE", f"fastagi: no route for {script}", "1")):
            await self._best_effort(session, ("SET", "VARIABLE", "FASTAGI_STATUS", "NOROUTE"))

    async def _best_effort(self, session: AgiSession, words: tuple[str, ...]) -> bool:
        """Send a command if the channel is alive; True if Asterisk answered 200."""
        if session.hung_up or not session.usable:
            return False
        try:
            async with asyncio.timeout(min(_STATUS_TIMEOUT, self._settings.reply_timeout)):
                await session.command(*words)
        except (AgiError, TimeoutError) as exc:
            session.log.info("could not send %s: %s", words[0], exc)
            return False
        return True
