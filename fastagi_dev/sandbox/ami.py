"""A minimal AMI client for the sandbox and the tests: log in, send actions, wait for events.

This is test tooling, not the product's AMI interface (that lives in ``fastagi/ami/``).
It exists so the sandbox can wait for ``FullyBooted`` and tests can wait for events such
as ``UserEvent`` without depending on the product code they test.

Wire format (main/manager.c): a banner line ``Asterisk Call Manager/<version>\\r\\n``,
then messages of ``Key: Value\\r\\n`` lines ended by an empty line. We frame on
``\\r\\n\\r\\n`` first and decode each whole message afterwards, because a UTF-8 character
can be split across TCP reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

# One message larger than this is not Asterisk talking; stop rather than grow memory.
MAX_MESSAGE_BYTES = 1 << 20
_TERMINATOR = b"\r\n\r\n"

AmiMessage = dict[str, str]


class AmiError(Exception):
    """The manager refused an action, closed the connection, or spoke nonsense."""


def parse_message(raw: bytes) -> AmiMessage:
    """One framed message (without its terminator) as a dict.

    A key that repeats (``Output:`` lines of a ``Command`` response, ``Variable:`` ...)
    keeps every value, joined with newlines.
    """
    message: AmiMessage = {}
    for line in raw.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        value = value.removeprefix(" ")
        message[key] = f"{message[key]}\n{value}" if key in message else value
    return message


def encode_action(fields: Mapping[str, str]) -> bytes:
    """``Key: Value`` lines plus the empty line. CR/LF in a value would inject fields."""
    lines = []
    for key, value in fields.items():
        if any(c in f"{key}{value}" for c in "\r\n"):
            raise ValueError(f"AMI field {key!r} contains CR or LF")
        lines.append(f"{key}: {value}\r\n")
    return ("".join(lines) + "\r\n").encode()


class AmiClient:
    """One logged-in AMI connection. Use ``async with await AmiClient.connect(...)``.

    Events that arrive while an action waits for its response are kept, in order, for
    ``wait_event`` / ``next_event``; nothing is dropped.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._events: deque[AmiMessage] = deque()
        self._ids = itertools.count(1)
        self.banner = ""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        within: float = 10.0,
        events: bool = True,
    ) -> Self:
        """Connect and log in. ``events=False`` asks Asterisk not to send events."""
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_MESSAGE_BYTES)
            client = cls(reader, writer)
            try:
                client.banner = (await reader.readline()).decode(errors="replace").strip()
                if not client.banner.startswith("Asterisk Call Manager/"):
                    raise AmiError(f"not an AMI banner: {client.banner!r}")
                await client.action(
                    {
                        "Action": "Login",
                        "Username": username,
                        "Secret": secret,
                        "Events": "on" if events else "off",
                    }
                )
            except BaseException:
                await client.close()
                raise
        return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    async def _read_message(self) -> AmiMessage:
        try:
            raw = await self._reader.readuntil(_TERMINATOR)
        except asyncio.IncompleteReadError as exc:
            raise AmiError("the manager closed the connection") from exc
        except asyncio.LimitOverrunError as exc:
            raise AmiError(f"AMI message larger than {MAX_MESSAGE_BYTES} bytes") from exc
        return parse_message(raw[: -len(_TERMINATOR)])

    async def send(self, fields: Mapping[str, str]) -> str:
        """Send an action without waiting; returns its ActionID (ours unless given)."""
        action = dict(fields)
        action.setdefault("ActionID", f"sandbox-{next(self._ids)}")
        self._writer.write(encode_action(action))
        await self._writer.drain()
        return action["ActionID"]

    async def action(self, fields: Mapping[str, str], *, within: float = 10.0) -> AmiMessage:
        """Send an action and return its response; ``Response: Error`` raises AmiError.

        Events read meanwhile are queued for ``wait_event``. Actions that answer with a
        list of events (``...List``) end with a ``...Complete`` event: read those with
        ``wait_event``.
        """
        action_id = await self.send(fields)
        async with asyncio.timeout(within):
            while True:
                message = await self._read_message()
                if "Response" in message and message.get("ActionID") == action_id:
                    break
                if "Event" in message:
                    self._events.append(message)
        if message["Response"] == "Error":
            raise AmiError(f"{fields.get('Action')}: {message.get('Message', message)}")
        return message

    async def command(self, command: str, *, within: float = 10.0) -> str:
        """A CLI command over AMI (needs ``command`` write permission); its output."""
        response = await self.action({"Action": "Command", "Command": command}, within=within)
        return response.get("Output", "")

    async def next_event(self, *, within: float | None = 10.0) -> AmiMessage:
        """The next event (queued first, then from the wire); ``within=None`` waits as
        long as it takes."""
        if self._events:
            return self._events.popleft()
        async with asyncio.timeout(within):
            while True:
                message = await self._read_message()
                if "Event" in message:
                    return message

    async def wait_event(
        self,
        name: str,
        *,
        within: float = 10.0,
        where: Callable[[AmiMessage], bool] | None = None,
        **fields: str,
    ) -> AmiMessage:
        """The first event called ``name`` whose fields equal ``fields`` (and ``where``),
        within ``within`` seconds (TimeoutError otherwise).

        Other events are skipped (and gone). Example::

            await ami.wait_event("UserEvent", UserEvent="FastAGIProbeEnd", within=5)
        """
        async with asyncio.timeout(within):
            while True:
                event = await self.next_event(within=within)
                if event.get("Event") != name:
                    continue
                if any(event.get(key) != value for key, value in fields.items()):
                    continue
                if where is None or where(event):
                    return event


async def wait_fully_booted(
    host: str,
    port: int,
    username: str,
    secret: str,
    *,
    within: float,
    alive: Callable[[], bool],
) -> None:
    """Return once Asterisk has sent ``FullyBooted``.

    Asterisk opens the manager port while it is still loading modules, so we connect as
    soon as the port accepts, log in (with ``system`` read permission) and wait for the
    event: main/manager.c sends ``FullyBooted`` to a session that logs in after boot,
    and broadcasts it to sessions already logged in when boot completes. Until the port
    is open there is nothing to wait on but the port itself, so connection attempts are
    retried while ``alive()`` says the process still runs.
    """
    async with asyncio.timeout(within):
        while True:
            try:
                client = await AmiClient.connect(host, port, username, secret)
            except (ConnectionRefusedError, ConnectionResetError):
                if not alive():
                    raise AmiError("Asterisk exited during start-up") from None
                # Retry pace for a port that is not listening yet; not a readiness guess.
                await asyncio.sleep(0.05)
                continue
            async with client:
                await client.wait_event("FullyBooted", within=within)
                return
