"""systemd's notification protocol (sd_notify(3)), spoken directly over its socket.

Theory of operation. A unit with ``Type=notify`` starts the service with ``NOTIFY_SOCKET``
naming a unix datagram socket (a path, or ``@name`` for the abstract namespace); the
service sends it newline-separated ``KEY=VALUE`` assignments, one datagram per message:

- ``READY=1`` once the service works (here: the FastAGI listener accepts calls), which is
  when ``systemctl start`` returns and units ordered after it start;
- ``WATCHDOG=1`` at least once per ``WatchdogSec``, else systemd kills the service with
  SIGABRT and ``Restart=`` starts it again. The environment says so with
  ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process meant);
- ``STOPPING=1`` when it begins to shut down (calls in progress still get their grace).

The watchdog is fed by a task of the event loop, every half ``WatchdogSec`` (what
sd_watchdog_enabled(3) advises). A loop that blocks (a stuck C call, a runaway
computation) stops feeding it, and a server that no longer answers Asterisk is
restarted instead of taking calls it cannot serve.

No dependency: the protocol is one ``sendto`` per message. Sending never blocks the
loop (a non-blocking socket; a full queue drops the message, as sd_notify does) and
never raises: systemd missing is not an error of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

logger = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for ``NOTIFY_SOCKET``: a path, or the abstract name that
    ``@`` stands for (a leading NUL byte); None for what we do not speak (``vsock:``)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, or None when the
    watchdog is off or meant for another process (``WATCHDOG_PID``)."""
    owner = environ.get(WATCHDOG_PID)
    if owner is not None and owner.strip() != str(pid):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class SystemdNotifier:
    """Sends notifications to systemd; a notifier without a socket does nothing."""

    def __init__(self, address: str | bytes | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        self._socket: socket.socket | None = None
        self.sent = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        environ = os.environ if environ is None else environ
        value = environ.get(NOTIFY_SOCKET, "")
        address = socket_address(value) if value else None
        if value and address is None:
            logger.warning("NOTIFY_SOCKET %r is not a unix socket; not notifying systemd", value)
        interval = watchdog_interval(environ, os.getpid()) if address is not None else None
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as exc:
            logger.warning("cannot notify systemd (%s): %s", assignments[0], exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def feed_watchdog(notifier: SystemdNotifier, interval: float) -> None:
    """``WATCHDOG=1`` every ``interval`` seconds, from the event loop, until cancelled."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def watchdog_fed(notifier: SystemdNotifier) -> AsyncIterator[None]:
    """Feed the watchdog (when systemd asked for one) for the duration of the block:
    start-up, service and the graceful shutdown alike, since systemd counts all three."""
    feeder = None
    if notifier.enabled and notifier.watchdog is not None:
        feeder = asyncio.create_task(feed_watchdog(notifier, notifier.watchdog), name="watchdog")
    try:
        yield
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
