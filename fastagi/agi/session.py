"""The typed API a call flow uses: one :class:`AgiSession` per FastAGI connection.

The I/O shell (:class:`~fastagi.agi.server.AgiServer`) pushes every byte it receives into
:meth:`AgiSession.feed_data`, which drives the sans-IO
:class:`~fastagi.agi.protocol.AgiConnection`; the session writes commands through a plain
function and turns replies into Python values or the exceptions of
:mod:`fastagi.agi.errors`.  Result codes follow res_agi.c: STREAM FILE,
WAIT FOR DIGIT and SAY DIGITS return the ASCII code of the digit pressed, 0 for none,
-1 on failure or hangup; GET DATA returns the digits, ``-1`` on failure or hangup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl

from fastagi.agi.errors import (
    AgiCommandFailure,
    AgiDeadChannel,
    AgiError,
    AgiHangup,
    AgiInvalidCommand,
    AgiProtocolError,
    AgiTimeout,
    AgiUsageError,
)
from fastagi.agi.protocol import (
    NEED_DATA,
    AgiConnection,
    ConnectionClosed,
    HangupNotice,
    ProtocolError,
    Reply,
    UsageReply,
)
from fastagi.agi.stats import LatencyHistogram

__all__ = [
    "AgiEnvironment",
    "AgiSession",
    "DigitsResult",
    "Logger",
]

_LOG = logging.getLogger("fastagi.agi.session")

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def _unknown_is_none(value: str | None) -> str | None:
    # setup_env() writes "unknown" for a caller id that is not valid.
    if value is None or value in {"", "unknown"}:
        return None
    return value


@dataclass(frozen=True)
class AgiEnvironment:
    """The environment block, with the parts a router and a flow need."""

    variables: Mapping[str, str]
    #: The path of agi_network_script: no query string, no leading "/".
    script: str
    #: The query string of agi_network_script (``?a=1&b=``), blank values kept.
    query: Mapping[str, str]
    #: agi_arg_1 .. agi_arg_N, in numeric order.
    args: tuple[str, ...]

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> AgiEnvironment:
        # agi_network_script is everything after the first "/" of the AGI URL, query
        # string included (res_agi.c launch_netscript); it is absent when empty.
        network_script = variables.get("agi_network_script", "")
        path, _, query_string = network_script.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        numbered: list[tuple[int, str]] = []
        for name, value in variables.items():
            suffix = name.removeprefix("agi_arg_")
            # isdecimal(), not isdigit(): int() refuses digits such as "²".
            if suffix != name and suffix.isdecimal():
                numbered.append((int(suffix), value))
        numbered.sort()
        return cls(
            variables=MappingProxyType(dict(variables)),
            script=path.lstrip("/"),
            query=MappingProxyType(query),
            args=tuple(value for _, value in numbered),
        )

    @property
    def uniqueid(self) -> str:
        return self.variables.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.variables.get("agi_channel", "")

    @property
    def callerid(self) -> str | None:
        return _unknown_is_none(self.variables.get("agi_callerid"))

    @property
    def calleridname(self) -> str | None:
        return _unknown_is_none(self.variables.get("agi_calleridname"))

    @property
    def context(self) -> str:
        return self.variables.get("agi_context", "")

    @property
    def extension(self) -> str:
        return self.variables.get("agi_extension", "")

    @property
    def language(self) -> str:
        return self.variables.get("agi_language", "")


@dataclass(frozen=True, slots=True)
class DigitsResult:
    """What GET DATA collected; ``timed_out`` when the caller stopped typing."""

    digits: str
    timed_out: bool


class AgiSession:
    """One FastAGI conversation, as typed async methods.

    At most one command is in flight: commands are serialised by a lock, and the
    protocol core refuses a second command before the reply to the first.  After a
    timeout, a cancellation or a protocol error mid-command the conversation is out of
    step, and every later command raises at once.

    ``write`` sends bytes to Asterisk; the I/O shell (:class:`AgiServer`) hands every byte
    it receives to :meth:`feed_data`, so a HANGUP or EOF is noticed even between commands.
    """

    def __init__(
        self,
        write: Callable[[bytes], object],
        connection: AgiConnection,
        environment: AgiEnvironment,
        *,
        peer: str = "",
        reply_timeout: float | None = None,
        latency: LatencyHistogram | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # The loop is kept, not asked for per command: on CPython 3.11
        # asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._write = write
        self._connection = connection
        self.environment = environment
        self.peer = peer
        self.hung_up = False
        self._reply_timeout = reply_timeout
        self._lock = asyncio.Lock()
        self._unusable: AgiError | None = None
        self.log: Logger = logging.LoggerAdapter(
            _LOG, {"agi_uniqueid": environment.uniqueid, "peer": peer}
        )
        # The pending command's reply, resolved by _handle_events().  It fails with EOFError when
        # Asterisk closes, ProtocolError on garbage, TimeoutError past the deadline.
        self._reply: asyncio.Future[Reply | UsageReply] | None = None
        # One timer per session, moved lazily: a command only pushes the deadline, and
        # the timer re-arms itself when it fires early (see _on_deadline).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # The server's turn, per command: from Asterisk's last message (the environment,
        # now, or the last reply) to the next command (fastagi/agi/stats.py).
        self._latency = latency
        self._heard_at = time.monotonic()

    @property
    def usable(self) -> bool:
        """False once the conversation is closed or out of step."""
        return self._unusable is None

    # -- bytes in ---------------------------------------------------------------------

    def feed_data(self, data: bytes) -> None:
        """Hand over bytes received from Asterisk; b"" just handles what is buffered."""
        if data:
            self._connection.receive_data(data)
        self._handle_events()

    def feed_eof(self) -> None:
        """Asterisk closed the connection (or it was lost)."""
        self._connection.receive_data(b"")
        self._handle_events()

    def _handle_events(self) -> None:
        connection = self._connection
        try:
            while (event := connection.next_event()) is not NEED_DATA:
                if isinstance(event, HangupNotice):
                    self._on_hangup_notice()
                elif isinstance(event, ConnectionClosed):
                    self._on_lost(EOFError(), AgiHangup("Asterisk closed the connection"))
                    return
                else:
                    # The core yields a reply only while a command waits for one.
                    assert isinstance(event, Reply | UsageReply), event
                    reply, self._reply = self._reply, None
                    if reply is not None and not reply.done():
                        self._heard_at = time.monotonic()
                        reply.set_result(event)
        except ProtocolError as exc:
            self._on_lost(exc, AgiProtocolError(str(exc), error=exc))

    def _on_hangup_notice(self) -> None:
        # Sent by run_agi() when the channel hangs up; the reply still follows. DEBUG: a
        # protocol detail of most calls (a panic caller hangs up during "Alarm
        # activated."); the flows log what a hang-up meant. At INFO it was 2.4 % of the
        # server's samples in the panic-confirm storm (bench.calls --profile), more than
        # the flow's own "alarm re-triggered" line.
        if not self.hung_up:
            self.log.debug("HANGUP notice from Asterisk")
        self.hung_up = True

    def _on_lost(self, cause: BaseException, reason: AgiError) -> None:
        """EOF or garbage: the pending command fails with ``cause``, later ones refuse."""
        if isinstance(reason, AgiHangup):
            self.hung_up = True
        if self._unusable is None:
            self._unusable = reason
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(cause)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        reply = self._reply
        if reply is None or reply.done():
            return  # nothing pending: the next command arms a new timer
        loop = self._loop
        if loop.time() < self._deadline:
            # A later command pushed the deadline since this timer was armed.
            self._timer = loop.call_at(self._deadline, self._on_deadline)
            return
        reply.set_exception(TimeoutError())

    # -- the low-level round trip -------------------------------------------------

    async def command(self, *words: str) -> Reply:
        """Send one command and return its ``200`` reply.

        Raises AgiInvalidCommand (510), AgiDeadChannel (511), AgiUsageError (520),
        AgiCommandFailure (another code), AgiHangup (Asterisk closed the connection),
        AgiTimeout (no reply within ``reply_timeout``) or AgiProtocolError.
        """
        # The command's text only for errors: joined where one is raised, not per command.
        async with self._lock:
            if self._unusable is not None:
                raise self._refusal(" ".join(words))
            if self._latency is not None:
                self._latency.observe(time.monotonic() - self._heard_at)
            try:
                data = self._connection.send_command(*words)
            except ProtocolError as exc:
                # Nothing was sent: the conversation is still in step.
                raise AgiProtocolError(str(exc), error=exc, command=" ".join(words)) from exc
            reply = self._reply = self._loop.create_future()
            try:
                event = await self._pushed_reply(data, reply)
            except TimeoutError:
                text = " ".join(words)
                self._unusable = AgiTimeout(f"no reply within {self._reply_timeout} s")
                raise AgiTimeout(
                    f"no reply to {text!r} within {self._reply_timeout} s", command=text
                ) from None
            except EOFError:
                self.hung_up = True
                self._unusable = AgiHangup("Asterisk closed the connection")
                raise AgiHangup("Asterisk closed the connection", command=" ".join(words)) from None
            except ProtocolError as exc:
                self._unusable = AgiProtocolError(str(exc), error=exc)
                raise AgiProtocolError(str(exc), error=exc, command=" ".join(words)) from exc
            except BaseException:
                # Cancelled (or the write failed) while Asterisk still owes a reply: out of
                # step for good.
                self._unusable = AgiProtocolError("a command was cancelled mid-reply")
                raise
        if type(event) is Reply and event.code == 200:
            return event
        return self._check(event, " ".join(words))

    async def _pushed_reply(
        self, data: bytes, reply: asyncio.Future[Reply | UsageReply]
    ) -> Reply | UsageReply:
        if self._reply_timeout is not None:
            loop = self._loop
            self._deadline = loop.time() + self._reply_timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._on_deadline)
        # No drain(): with one command in flight, the write buffer never holds more than
        # one command line, whether or not Asterisk reads.
        self._write(data)
        return await reply

    def _refusal(self, text: str) -> AgiError:
        reason = self._unusable
        if isinstance(reason, AgiHangup):
            return AgiHangup(f"the conversation is over: {reason}", command=text)
        return AgiProtocolError(f"the conversation is out of step: {reason}", command=text)

    def _check(self, event: Reply | UsageReply, text: str) -> Reply:
        if isinstance(event, UsageReply):
            usage = "\n".join(event.lines)
            raise AgiUsageError(f"520 usage error for {text!r}", usage=usage, command=text)
        if event.code == 200:
            return event
        if event.code == 510:
            raise AgiInvalidCommand(f"510 unknown command {text!r}", command=text)
        if event.code == 511:
            # Only a hung-up channel refuses commands with 511.
            self.hung_up = True
            raise AgiDeadChannel(f"511 dead channel refused {text!r}", command=text)
        raise AgiCommandFailure(f"unexpected reply {event.raw!r}", reply=event, command=text)

    @staticmethod
    def _int_result(reply: Reply, text: str) -> int:
        try:
            return int(reply.result)
        except ValueError:
            raise AgiProtocolError(f"non-numeric result in {reply.raw!r}", command=text) from None

    async def _digit_command(self, *words: str) -> str | None:
        # STREAM FILE / WAIT FOR DIGIT / SAY DIGITS: the ASCII code of the digit that
        # stopped it, 0 for none, -1 "on error or if the channel was disconnected"
        # (handle_streamfile also answers -1 for a file it cannot open; either way the
        # flow cannot go on with this prompt, so both surface as AgiHangup).
        text = " ".join(words)
        reply = await self.command(*words)
        value = self._int_result(reply, text)
        if value < 0:
            self.hung_up = True
            raise AgiHangup(f"{words[0]} returned {value} (hangup or failure)", command=text)
        if value == 0:
            return None
        if value > 0x10FFFF:
            raise AgiProtocolError(f"not a character code in {reply.raw!r}", command=text)
        return chr(value)

    # -- typed commands -------------------------------------------------------------

    async def answer(self) -> None:
        reply = await self.command("ANSWER")
        if self._int_result(reply, "ANSWER") < 0:
            self.hung_up = True
            raise AgiHangup("ANSWER returned -1 (channel failure)", command="ANSWER")

    async def stream_file(self, filename: str, escape_digits: str = "") -> str | None:
        """Play a file; the digit that interrupted it, or None."""
        return await self._digit_command("STREAM", "FILE", filename, escape_digits)

    async def get_data(
        self, filename: str, timeout_ms: int | None = None, max_digits: int | None = None
    ) -> DigitsResult:
        """Play a prompt and collect digits (ended by '#', ``max_digits`` or timeout).

        ``timeout_ms`` None means Asterisk's default (6 s for the first digit, 2 s
        between digits; ast_app_getdata_full treats 0 the same way).
        """
        words = ["GET", "DATA", filename]
        if timeout_ms is not None or max_digits is not None:
            words.append(str(timeout_ms if timeout_ms is not None else 0))
        if max_digits is not None:
            words.append(str(max_digits))
        reply = await self.command(*words)
        # handle_getdata(): "200 result=-1" when the prompt failed or the caller hung up.
        if reply.result == "-1":
            self.hung_up = True
            raise AgiHangup("GET DATA returned -1 (hangup or failure)", command=" ".join(words))
        return DigitsResult(reply.result, reply.timed_out)

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        """Wait for one digit; None on timeout.  -1 waits forever."""
        return await self._digit_command("WAIT", "FOR", "DIGIT", str(timeout_ms))

    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None:
        return await self._digit_command("SAY", "DIGITS", digits, escape_digits)

    async def exec(self, application: str, *args: str) -> int:
        """Run a dialplan application; its return value (-1 usually means hangup).

        handle_exec() passes only argv[2] to the application, so the arguments travel
        as one word joined with ',' (the dialplan separator).
        """
        words = ["EXEC", application]
        if args:
            words.append(",".join(args))
        reply = await self.command(*words)
        text = " ".join(words)
        value = self._int_result(reply, text)
        if value == -2:
            raise AgiCommandFailure(
                f"no dialplan application {application!r}", reply=reply, command=text
            )
        return value

    async def get_variable(self, name: str) -> str | None:
        """A channel variable or function value; None when it is not set."""
        reply = await self.command("GET", "VARIABLE", name)
        if reply.result == "1":
            return reply.data or ""
        return None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET", "VARIABLE", name, value)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.command("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        await self.command("HANGUP")
        self.hung_up = True
