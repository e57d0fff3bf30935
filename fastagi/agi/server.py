"""The asyncio FastAGI listener: allow-list, session cap, routing, timeouts, shutdown.

A thin shell: it accepts connections, reads the environment through
:class:`~fastagi.agi.session.AgiSession`, runs the flow registered for the script path,
and closes the socket the moment the flow is done (Asterisk holds the channel until we
close).  Each connection is one task; whatever a peer does (garbage, stalling, vanishing)
ends that task and nothing else.  The server uses whichever event loop is running; the
CLI installs uvloop when it is available.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from fastagi.agi.errors import AgiError, AgiHangup
from fastagi.agi.session import AgiSession, Logger, StreamTransport
from fastagi.config import AgiSettings

__all__ = ["AgiServer", "Flow"]

Flow = Callable[[AgiSession], Awaitable[None]]

_LOG = logging.getLogger("fastagi.agi.server")
# A status write after a failure is a courtesy to the dialplan, not worth a long wait.
_STATUS_TIMEOUT = 5.0
# How long a closing socket may take to flush before it is aborted.
_CLOSE_TIMEOUT = 1.0

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


class AgiServer:
    """Serve FastAGI on ``settings.host:settings.port``, routing on the script path.

    ``routes`` maps the path of the AGI URL (``agi://host/panic?x=1`` routes as
    ``panic``) to a flow.  Use ``async with AgiServer(...)`` or ``start()`` / ``close()``.
    """

    def __init__(
        self,
        settings: AgiSettings,
        routes: Mapping[str, Flow],
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._settings = settings
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

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting.  ``settings.port`` 0 picks a free port."""
        if self._server is not None or self._closing:
            raise RuntimeError("AgiServer already started or closed")
        # A plain (non-coroutine) callback runs inside connection_made(), so every
        # connection is checked and its task registered before any byte is read.
        self._server = await asyncio.start_server(
            self._on_connect, self._settings.host, self._settings.port
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

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = _format_peer(peername)
        log = logging.LoggerAdapter(self._log, {"agi_uniqueid": "", "peer": peer})
        if self._closing:
            log.info("refused connection: server is shutting down")
            writer.close()
            return
        address = _peer_address(peername)
        if address is None or not any(address in network for network in self._networks):
            log.warning("refused connection: %s is not in allowed_networks", peer)
            writer.close()
            return
        if len(self._tasks) >= self._settings.max_sessions:
            log.warning("refused connection: %d sessions running (max_sessions)", len(self._tasks))
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(
            self._serve_connection(reader, writer, peer, log), name=f"fastagi {peer}"
        )
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # _serve_connection catches everything; this is the last line of defence so
            # nothing ever reaches the loop's exception handler.
            self._log.error("session task failed", exc_info=exc)

    async def _serve_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        log: Logger,
    ) -> None:
        try:
            session = await self._accept(StreamTransport(reader, writer), peer, log)
            if session is None:
                return
            script = session.environment.script
            flow = self._routes.get(script)
            if flow is None:
                await self._no_route(session)
            else:
                await self._run_flow(flow, session)
        except Exception:
            log.exception("unexpected error serving the connection")
        finally:
            await self._close_writer(writer)

    async def _accept(
        self, transport: StreamTransport, peer: str, log: Logger
    ) -> AgiSession | None:
        try:
            return await AgiSession.accept(
                transport,
                peer=peer,
                environment_timeout=self._settings.environment_timeout,
                reply_timeout=self._settings.reply_timeout,
            )
        except AgiError as exc:
            # A stalled, garbled or vanished peer: AgiTimeout or AgiProtocolError.
            log.warning("closing connection: %s", exc)
        return None

    async def _run_flow(self, flow: Flow, session: AgiSession) -> None:
        log = session.log
        script = session.environment.script
        log.info("flow %r started for %s", script, session.environment.channel)
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
            log.info("flow %r finished", script)

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

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        # close() first and synchronously: even if this task is cancelled while waiting,
        # the socket is on its way down.
        writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            # A peer that does not read keeps our send buffer full; do not wait for it.
            writer.transport.abort()
