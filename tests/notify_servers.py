"""Real servers on loopback for the notifier tests: an SMTP server (aiosmtpd) and an HTTP
server (the standard library's), each in a thread of its own, plus a history recorder
that tests wait on.

Both servers answer from a script (``replies`` / ``statuses``): what is left in it is
answered first, then success. Everything they receive is kept, parsed, for the test body
to assert on.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.message
import email.policy
import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from fastagi.domain.events import HistoryEvent

ACCEPTED = "250 Message accepted for delivery"


def free_port() -> int:
    """A TCP port nobody listens on (for a server that starts later, or never)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- SMTP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    raw: bytes
    login: tuple[str, str] | None
    tls: bool


class Inbox:
    """The aiosmtpd handler: keeps each message, answers DATA from the script."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.replies: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
            raw = envelope.original_content or b""
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            login = session.auth_data if session.authenticated else None
            self.mails.append(
                Mail(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    raw=raw,
                    login=login,
                    tls=session.ssl is not None,
                )
            )
        return ACCEPTED


def check_login(username: str, password: str) -> Callable[..., AuthResult]:
    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        login = auth_data.login.decode()
        given = auth_data.password.decode()
        if (login, given) != (username, password):
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=(login, given))

    return authenticator


class _SmtpConnection(SMTP):
    """aiosmtpd's protocol for one connection, which knows when the connection is lost."""

    def __init__(self, handler: Any, live: set[_SmtpConnection], **options: Any) -> None:
        super().__init__(handler, **options)
        self._live = live
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called a second time after STARTTLS, with the TLS transport.
        super().connection_made(transport)
        self._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._live.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)


class _Controller(Controller):
    """aiosmtpd's Controller, whose stop() first closes the connections still open.

    Controller.stop() (aiosmtpd 1.4.6, controller.py) stops the server's loop and cancels
    its tasks; ``_run`` then closes the listening socket and the loop at once. A
    connection that is still open, or still closing, is not waited for: a plain one needs
    a loop iteration or two to reach connection_lost, a STARTTLS one waits for the
    client's close_notify (asyncio's sslproto ``_start_shutdown``), and one whose client
    has just closed (after a failed AUTH, say) is halfway through that TLS shutdown. Such
    a transport is never closed; its socket leaks, and is reported ("unclosed transport")
    in whichever later test the garbage collector happens to run in.
    """

    def __init__(self, handler: Any, **options: Any) -> None:
        super().__init__(handler, **options)
        self._live: set[_SmtpConnection] = set()  # touched on the server's loop only

    def factory(self) -> SMTP:
        return _SmtpConnection(self.handler, self._live, **self.SMTP_kwargs)

    async def _close_connections(self) -> None:
        assert self.server is not None
        self.server.close()  # accept no more
        live = list(self._live)
        for connection in live:
            transport = connection.transport
            assert isinstance(transport, asyncio.Transport)
            # abort(), not close(): a TLS close would wait for the client's close_notify,
            # and the client's loop, in the test's thread, is blocked in stop().
            transport.abort()
        await asyncio.gather(*(connection.lost for connection in live))

    def stop(self, no_assert: bool = False) -> None:
        try:
            if self.loop.is_running():  # not when start() failed
                closing = asyncio.run_coroutine_threadsafe(self._close_connections(), self.loop)
                closing.result(timeout=5.0)
        finally:
            super().stop(no_assert)


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1:``port``; start() and stop() may be repeated."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self._options = smtp_options
        self._controller: _Controller | None = None

    def start(self) -> None:
        self._controller = _Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="mail.test",
            ready_timeout=5.0,
            **self._options,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


# -- HTTP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookServer:
    """A stdlib HTTP server; each request is kept and answered from ``statuses``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.statuses: collections.deque[tuple[int, str]] = collections.deque()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner._lock:
                    owner.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body)
                    )
                    status, text = (
                        owner.statuses.popleft() if owner.statuses else (200, '{"id": "m-1"}')
                    )
                payload = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output stays quiet

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        # A short poll interval: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# -- the history -------------------------------------------------------------------------


class History:
    """The ``record`` callable for a Notifier; tests wait for events to arrive."""

    def __init__(self) -> None:
        self.events: list[HistoryEvent] = []
        self._changed = asyncio.Event()

    async def record(self, event: HistoryEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def details(self, **match: Any) -> list[dict[str, Any]]:
        found = [dict(event.details) for event in self.events]
        return [d for d in found if all(d.get(k) == v for k, v in match.items())]

    async def wait_for(self, count: int = 1, *, within: float = 10.0, **match: Any) -> None:
        """Until ``count`` events whose details match ``match`` have been recorded."""
        async with asyncio.timeout(within):
            while len(self.details(**match)) < count:
                self._changed.clear()
                await self._changed.wait()


def server_tls(ca: Any, tmp: Any) -> tuple[ssl.SSLContext, str]:
    """A server context with a certificate for 127.0.0.1 from trustme's ``ca``, and the
    path of the CA's PEM for the client's ``ca_file``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    path = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return context, str(path)


@contextmanager
def login_smtp(
    ca: Any, tmp: Any, password: str, *, require_starttls: bool = True
) -> Iterator[tuple[SmtpServer, str]]:
    """A running SMTP server with STARTTLS (a certificate from trustme's ``ca``) that
    takes the login ``pbx``/``password``; with the path of the CA's PEM."""
    context, ca_file = server_tls(ca, tmp)
    server = SmtpServer(
        tls_context=context,
        require_starttls=require_starttls,
        auth_required=True,
        authenticator=check_login("pbx", password),
    )
    server.start()
    try:
        yield server, ca_file
    finally:
        server.stop()
