"""A sans-IO FastAGI core: bytes in, events out; commands in, bytes out.

Theory of operation
-------------------
Asterisk opens the TCP connection and speaks first: an *environment block* of
``agi_name: value`` lines closed by an empty line (res_agi.c ``setup_env``).  From then
on the server drives: it sends one command line, and Asterisk answers with one reply
(``agi_handle_command``).  The only thing Asterisk sends unasked is the line ``HANGUP``,
written from the idle loop of ``run_agi`` when the channel hangs up; it is a notice, not
the reply, and the reply to a pending command still follows.

:class:`AgiConnection` tracks that conversation in a small state machine::

    ENVIRONMENT --blank line--> IDLE --send_command--> AWAITING_REPLY --reply--> IDLE
    IDLE or AWAITING_REPLY --EOF at a line boundary--> CLOSED
    any other EOF, any malformed input --> ERROR (RemoteProtocolError, then and after)

``HANGUP`` may arrive in IDLE or AWAITING_REPLY and changes no state.  ``100 Trying...``
is consumed silently; a ``520-`` reply is gathered into one UsageReply.

The caller feeds whatever it read with :meth:`AgiConnection.receive_data` (``b""`` means
EOF) and pulls :meth:`AgiConnection.next_event` until it returns :data:`NEED_DATA`.  The
core never touches a socket or an event loop, so the same byte transcripts drive it in
tests whole, byte by byte, or with trailing data.

Every limit lives here: a line longer than ``max_line_size`` is a protocol error as soon
as the buffer holds that many bytes without a newline, so a peer can never make us
buffer without bound.  Errors are split by who broke the protocol, as in h11:
:class:`LocalProtocolError` (our caller asked for something the protocol cannot carry)
and :class:`RemoteProtocolError` (the peer sent something that is not FastAGI).

Bytes are decoded in exactly one place, :func:`_decode_line`: UTF-8 with
``errors="replace"``.  Asterisk passes channel data through unchanged (a caller name
from a SIP header may be Latin-1), and a lone surrogate from ``surrogateescape`` would
only blow up later and far away (PostgreSQL, JSON, the TTS engine).  A mangled caller
name is a better failure than a lost alarm.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_COMMAND_SIZE",
    "DEFAULT_MAX_ENVIRONMENT_LINES",
    "DEFAULT_MAX_ENVIRONMENT_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "DEFAULT_MAX_USAGE_LINES",
    "MAX_COMMAND_WORDS",
    "NEED_DATA",
    "AgiConnection",
    "ConnectionClosed",
    "ConnectionState",
    "Environment",
    "Event",
    "HangupNotice",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "UsageReply",
    "encode_command",
]

# res_agi.c: MAX_ARGS is 128, and parse_args() keeps one slot of argv for the NULL
# terminator (it truncates at ``x >= MAX_ARGS - 1``), so 127 words reach the handler.
MAX_COMMAND_WORDS = 127
# One command line, newline included.  The project's Asterisk notes give 8192; older
# res_agi.c reads commands into ``char buf[AGI_BUF_LEN]`` (2048) and would split a longer
# line into two commands, so flows keep their commands short in any case.
DEFAULT_MAX_COMMAND_SIZE = 8192
# One received line, terminator excluded.  GET VARIABLE echoes a value inside its reply,
# so replies are not bounded by anything on Asterisk's side; this is our bound.
DEFAULT_MAX_LINE_SIZE = 8192
# setup_env() writes 21 fixed lines plus one per AGI() argument (at most 127).
DEFAULT_MAX_ENVIRONMENT_LINES = 256
DEFAULT_MAX_ENVIRONMENT_SIZE = 64 * 1024
DEFAULT_MAX_USAGE_LINES = 512

# agi_handle_command(): RESULT_SHOWUSAGE writes "520-..." then the usage text, then this.
_USAGE_END = "520 End of proper usage."
_REPLY_LINE = re.compile(r"(\d{3})([ -])?(.*)", re.DOTALL)
_RESULT = re.compile(r"result=(\S*)(?: (.*))?", re.DOTALL)
# The common reply, "200 result=N" and nothing after: what the general path makes of it in
# one match instead of two.
_PLAIN_200 = re.compile(r"200 result=(\S*)")
_ENDPOS = re.compile(r"(?:^|\s)endpos=(-?\d+)(?:\s|$)")
# A word needs no quotes when parse_args() would read it back unchanged: printable ASCII
# without space, '"' and '\\' (the three characters parse_args treats specially).
_BARE_WORD = re.compile(r"[!#-\[\]-~]+")
_FORBIDDEN_IN_WORD = re.compile(r"[\r\n\x00]")
# An environment name holds no whitespace (\s matches exactly what str.isspace() does).
_SPACE = re.compile(r"\s")


class ProtocolError(Exception):
    """The conversation broke the FastAGI protocol."""


class LocalProtocolError(ProtocolError):
    """Our side asked for something FastAGI cannot carry (e.g. a newline in an argument)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not FastAGI."""


class NeedData(enum.Enum):
    """``next_event`` found no complete event in the buffer; feed more bytes."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


class ConnectionState(enum.Enum):
    ENVIRONMENT = "ENVIRONMENT"
    IDLE = "IDLE"
    AWAITING_REPLY = "AWAITING_REPLY"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Environment:
    """The block Asterisk sends on connect, keys as sent (``agi_channel``, ...)."""

    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    """A one-line reply: ``200 result=N [(data)] [endpos=M]``, or a 5xx status line.

    ``result`` is the text after ``result=`` ("" when absent, as in 510/511, or when
    GET DATA timed out with no digits); ``data`` the text in parentheses, if any.
    """

    code: int
    result: str
    data: str | None
    endpos: int | None
    timed_out: bool
    raw: str


@dataclass(frozen=True, slots=True)
class UsageReply:
    """A 520 reply: the command's syntax was wrong.  ``lines`` is the usage text."""

    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """The out-of-band ``HANGUP`` line: the caller has gone.  It is not a reply."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Asterisk closed the connection (EOF at a line boundary)."""


Event = Environment | Reply | UsageReply | HangupNotice | ConnectionClosed


def encode_command(*words: str, max_size: int = DEFAULT_MAX_COMMAND_SIZE) -> bytes:
    """One command line for Asterisk, each word quoted where parse_args() needs it.

    Raises LocalProtocolError for what the wire cannot carry: CR, LF or NUL anywhere (a
    newline would end the command early and smuggle in a second one), more than
    MAX_COMMAND_WORDS words, a line over ``max_size`` bytes, or text that is not UTF-8.
    """
    if not words:
        raise LocalProtocolError("a command needs at least one word")
    if len(words) > MAX_COMMAND_WORDS:
        raise LocalProtocolError(
            f"{len(words)} words in one command; res_agi.c reads at most {MAX_COMMAND_WORDS}"
        )
    parts: list[str] = []
    for word in words:
        if not isinstance(word, str):
            raise LocalProtocolError(f"command words are str, got {type(word).__name__}")
        parts.append(_quote(word))
    text = " ".join(parts)
    # One search of the whole line: quoting adds no CR, LF or NUL, so it finds one exactly
    # when a word holds one; only then is the word looked for.
    if _FORBIDDEN_IN_WORD.search(text):
        word = next(word for word in words if _FORBIDDEN_IN_WORD.search(word))
        raise LocalProtocolError(f"CR, LF or NUL in a command word: {word!r}")
    try:
        line = (text + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"command is not encodable as UTF-8: {exc}") from None
    if len(line) > max_size:
        raise LocalProtocolError(f"command line of {len(line)} bytes; the limit is {max_size}")
    return line


def _quote(word: str) -> str:
    # parse_args(): '"' toggles quoting (and an empty "" is still a word), '\\' escapes
    # the next character, space and tab split words outside quotes.
    if _BARE_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode_line(raw: bytes | bytearray) -> str:
    """The one place bytes become text (see the module docstring for the policy)."""
    if b"\x00" in raw:
        # Asterisk writes C strings: a NUL cannot come from it.
        raise RemoteProtocolError("NUL byte in a line")
    return raw.decode("utf-8", errors="replace")


def _environment_items(lines: list[str]) -> dict[str, str]:
    """The block's lines as a dict, a later name winning, as ``dict(map(_environment_item,
    lines))`` would make it.

    Every line setup_env() writes ("agi_%s: %s\n") takes the first branch: a name that is
    an identifier holds no whitespace (no character is both), and a value that does not
    end in CR means the line did not either. The rest, and every error, go the general
    way. The 23 lines Asterisk 22 sends took 9 us this way against 16 us (timeit, the
    minimum of 30 runs, 2026-11-29).
    """
    items: dict[str, str] = {}
    for line in lines:
        name, separator, value = line.partition(": ")
        if not separator or not name.isidentifier() or value.endswith("\r"):
            name, value = _environment_item(line)
        items[name] = value
    return items


def _environment_item(line: str) -> tuple[str, str]:
    # setup_env() writes "agi_name: value"; the value may itself contain ": ".
    if line.endswith("\r"):
        line = line[:-1]
    name, separator, value = line.partition(": ")
    if not separator and line.endswith(":"):
        # "agi_accountcode: " with its trailing space trimmed by a proxy.
        name, separator, value = line[:-1], ":", ""
    if not separator or not name or _SPACE.search(name):
        raise RemoteProtocolError(f"not an environment line: {line[:80]!r}")
    return name, value


def _parse_reply_line(line: str) -> Reply | None:
    """A single reply line, or None for the 520- opener (the caller handles it)."""
    plain = _PLAIN_200.fullmatch(line)
    if plain is not None:
        return Reply(200, plain.group(1), None, None, False, line)
    match = _REPLY_LINE.fullmatch(line)
    if match is None:
        raise RemoteProtocolError(f"not a FastAGI reply: {line[:80]!r}")
    code = int(match.group(1))
    separator, rest = match.group(2), match.group(3)
    if separator == "-":
        if code != 520:
            raise RemoteProtocolError(f"continuation line with code {code}: {line[:80]!r}")
        return None
    if separator is None and rest:
        raise RemoteProtocolError(f"not a FastAGI reply: {line[:80]!r}")
    result_match = _RESULT.fullmatch(rest)
    if result_match is None:
        if code == 200:
            raise RemoteProtocolError(f"200 reply without result=: {line[:80]!r}")
        # 510/511 and friends: the text varies between versions, the code decides.
        return Reply(code, "", None, None, False, line)
    result, tail = result_match.group(1), result_match.group(2) or ""
    data: str | None = None
    if tail.startswith("("):
        # GET VARIABLE echoes the value unescaped, so the value may itself contain ')'.
        # The data runs to the last ')'; what follows is key=value attributes (endpos=),
        # which never contain one.  Speech results are the exception and unused here.
        close = tail.rfind(")")
        if close > 0:
            data, tail = tail[1:close], tail[close + 1 :]
    endpos_match = _ENDPOS.search(tail)
    endpos = int(endpos_match.group(1)) if endpos_match else None
    # GET DATA: "200 result=<digits> (timeout)"; RECORD FILE: "(timeout) endpos=N".
    timed_out = data == "timeout"
    return Reply(code, result, data, endpos, timed_out, line)


class AgiConnection:
    """The server side of one FastAGI conversation, with no I/O of its own."""

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_environment_lines: int = DEFAULT_MAX_ENVIRONMENT_LINES,
        max_environment_size: int = DEFAULT_MAX_ENVIRONMENT_SIZE,
        max_usage_lines: int = DEFAULT_MAX_USAGE_LINES,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
    ) -> None:
        self._max_line_size = max_line_size
        self._max_environment_lines = max_environment_lines
        self._max_environment_size = max_environment_size
        self._max_usage_lines = max_usage_lines
        self._max_command_size = max_command_size
        self._buffer = bytearray()
        # Where to resume the newline search, so byte-by-byte feeding stays linear.
        self._scan_from = 0
        self._eof = False
        self._state = ConnectionState.ENVIRONMENT
        # Newlines seen so far in an incomplete environment, and where its last line starts.
        self._environment_lines = 0
        self._line_start = 0
        self._usage: list[str] | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def trailing_data(self) -> bytes:
        """Bytes received but not consumed by any event yet."""
        return bytes(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def send_command(self, *words: str) -> bytes:
        """The bytes of one command.  Only one command may wait for its reply."""
        if self._state is ConnectionState.ENVIRONMENT:
            raise LocalProtocolError("cannot send a command before the environment is read")
        if self._state is ConnectionState.AWAITING_REPLY:
            raise LocalProtocolError("a command is already waiting for its reply")
        if self._state is not ConnectionState.IDLE:
            raise LocalProtocolError(f"cannot send a command in state {self._state.name}")
        data = encode_command(*words, max_size=self._max_command_size)
        self._state = ConnectionState.AWAITING_REPLY
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA.  Raises RemoteProtocolError on bad input."""
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("the connection already failed")
        try:
            return self._next_event()
        except ProtocolError:
            self._state = ConnectionState.ERROR
            raise

    def _next_event(self) -> Event | NeedData:
        while True:
            if self._state is ConnectionState.CLOSED:
                return ConnectionClosed()
            if self._state is ConnectionState.ENVIRONMENT:
                environment = self._next_environment()
                if environment is None:
                    break
                return environment
            line = self._next_line()
            if line is None:
                break
            event = self._on_line(line)
            if event is not None:
                return event
        return self._on_eof() if self._eof else NEED_DATA

    def _next_environment(self) -> Environment | None:
        """The whole environment block at once, or None while its blank line is missing.

        The block is framed, checked and decoded in one piece rather than line by line:
        it is the bulk of what a session receives.
        """
        buffer = self._buffer
        end = self._environment_end()
        if end < 0:
            # Not complete yet: enforce the limits on what has arrived, counting only the
            # new bytes so that byte-by-byte feeding stays linear.
            new_lines = buffer.count(b"\n", self._scan_from)
            if new_lines:
                self._environment_lines += new_lines
                self._line_start = buffer.rfind(b"\n", self._scan_from) + 1
            self._scan_from = len(buffer)
            # +1: the line may still end in "\r\n".
            if len(buffer) - self._line_start > self._max_line_size + 1:
                raise RemoteProtocolError(f"line longer than {self._max_line_size} bytes")
            self._check_environment_size(len(buffer), self._environment_lines)
            return None
        block = bytes(buffer[:end])
        del buffer[:end]
        self._scan_from = 0
        self._check_environment_size(end, block.count(b"\n"))
        if end > self._max_line_size:
            for raw in block.split(b"\n"):
                if len(raw.removesuffix(b"\r")) > self._max_line_size:
                    raise RemoteProtocolError(f"line longer than {self._max_line_size} bytes")
        # A multi-byte sequence never spans a newline, so decoding the block at once
        # replaces exactly what decoding each line would.
        text = _decode_line(block)
        lines = text.split("\n")
        del lines[-2:]  # the blank line and what follows its newline (nothing)
        self._state = ConnectionState.IDLE
        return Environment(_environment_items(lines))

    def _environment_end(self) -> int:
        """The offset just past the blank line that ends the block, or -1."""
        buffer = self._buffer
        if buffer[:1] == b"\n":
            return 1
        if buffer[:2] == b"\r\n":
            return 2
        # Resume two bytes back: a terminator may straddle the previous chunk's end.
        start = max(self._scan_from - 2, 0)
        lf = buffer.find(b"\n\n", start)
        crlf = buffer.find(b"\n\r\n", start, lf + 3 if lf >= 0 else len(buffer))
        if crlf >= 0:
            return crlf + 3
        return lf + 2 if lf >= 0 else -1

    def _check_environment_size(self, size: int, lines: int) -> None:
        if size > self._max_environment_size:
            raise RemoteProtocolError(f"environment larger than {self._max_environment_size} bytes")
        if lines > self._max_environment_lines:
            raise RemoteProtocolError(
                f"environment longer than {self._max_environment_lines} lines"
            )

    def _next_line(self) -> str | None:
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            # +1: the line may still end in "\r\n".
            if len(self._buffer) > self._max_line_size + 1:
                raise RemoteProtocolError(f"line longer than {self._max_line_size} bytes")
            return None
        raw = self._buffer[:end]
        del self._buffer[: end + 1]
        self._scan_from = 0
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self._max_line_size:
            raise RemoteProtocolError(f"line longer than {self._max_line_size} bytes")
        return _decode_line(raw)

    def _on_eof(self) -> Event:
        # An incomplete environment stays buffered whole, so only its last line counts.
        if self._buffer and not (
            self._state is ConnectionState.ENVIRONMENT and self._buffer.endswith(b"\n")
        ):
            raise RemoteProtocolError("connection closed in the middle of a line")
        if self._state is ConnectionState.ENVIRONMENT:
            raise RemoteProtocolError("connection closed before the end of the environment")
        if self._usage is not None:
            raise RemoteProtocolError("connection closed in the middle of a 520 usage reply")
        self._state = ConnectionState.CLOSED
        return ConnectionClosed()

    def _on_line(self, line: str) -> Event | None:
        if self._usage is not None:
            return self._on_usage_line(line)
        if line == "HANGUP":
            return HangupNotice()
        if self._state is not ConnectionState.AWAITING_REPLY:
            raise RemoteProtocolError(f"unsolicited line with no command pending: {line[:80]!r}")
        return self._on_reply_line(line)

    def _on_reply_line(self, line: str) -> Event | None:
        reply = _parse_reply_line(line)
        if reply is None:
            self._usage = [line[4:]]
            return None
        if reply.code == 100:
            # GOSUB answers "100 result=0 Trying..." before it runs the subroutine; the
            # real reply follows when it returns (res_agi.c handle_gosub).
            return None
        self._state = ConnectionState.IDLE
        if reply.code == 520:
            # "520 Invalid command syntax.  Proper usage not available." (no usage text)
            return UsageReply((line[4:],))
        return reply

    def _on_usage_line(self, line: str) -> Event | None:
        assert self._usage is not None
        # Older res_agi.c wrote the usage text without its final newline, gluing the
        # terminator onto the last usage line; accept the terminator at a line's end.
        if line.endswith(_USAGE_END):
            head = line[: -len(_USAGE_END)]
            if head:
                self._usage.append(head)
            lines, self._usage = tuple(self._usage), None
            self._state = ConnectionState.IDLE
            return UsageReply(lines)
        self._usage.append(line)
        if len(self._usage) > self._max_usage_lines:
            raise RemoteProtocolError(f"520 usage reply longer than {self._max_usage_lines} lines")
        return None
