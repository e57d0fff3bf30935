"""The AMI wire format, with no I/O: split bytes into messages, and encode actions.

Theory of operation (main/manager.c): on connect Asterisk writes one banner line,
``Asterisk Call Manager/<version>\\r\\n``. Every message after it, response or event, is
``Key: Value\\r\\n`` lines closed by an empty line, so ``\\r\\n\\r\\n`` ends a message and
can appear nowhere inside one. We frame on those bytes first and decode each whole
message afterwards: TCP may split a UTF-8 character across two reads, and decoding each
read on its own (as panoramisk 1.4 does, dropping what it cannot decode) corrupts it.

Actions go the other way as ``Key: Value\\r\\n`` lines plus an empty line. Asterisk
reads them with ``get_input``, which ends a line at CRLF *or at a bare LF*, and keeps at
most 1024 bytes of one line (a longer line is dropped with "Dumping long line"). So a
value containing CR or LF could inject fields (another ``Variable``, a second
``Action``), and an over-long line silently loses a field: we refuse both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from fastagi.ami.errors import AmiProtocolError, AmiValueError

BANNER_PREFIX = b"Asterisk Call Manager/"
TERMINATOR = b"\r\n\r\n"
# One message larger than this is not Asterisk talking (a Command's output is the
# largest thing it sends us); stop rather than let the buffer grow without end.
MAX_MESSAGE_BYTES = 1 << 20
# main/manager.c: ``char inbuf[1025]`` in struct mansession_session, one byte kept for
# the NUL; a line (CRLF included) longer than that is thrown away by get_input.
MAX_LINE_BYTES = 1024
# main/manager.c: ``AST_MAX_MANAGER_HEADERS``; headers past it are ignored.
MAX_HEADERS = 128
# Characters that end or truncate a header: CR and LF end the line (get_input), NUL ends
# the C string.
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_KEY = re.compile(r"[A-Za-z0-9_-]+")

FieldValue = str | int | Sequence[str]


class FrameDecoder:
    """Feed it bytes as they arrive; it returns each complete message, decoded."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes
        # Where the next search for the terminator starts: bytes before it were
        # searched already, so a message trickling in byte by byte costs O(n), not O(n^2).
        self._scan_from = 0
        self.banner: str | None = None

    def feed(self, data: bytes) -> list[str]:
        """The messages ``data`` completes, each without its terminating empty line.

        Decoding policy: UTF-8 with ``errors="replace"``. Asterisk passes bytes through
        (a caller name from a Latin-1 phone), and a U+FFFD shows where such bytes were,
        where dropping them would hide it.
        """
        self._buffer += data
        if self.banner is None and not self._read_banner():
            return []
        messages: list[str] = []
        while True:
            end = self._buffer.find(TERMINATOR, self._scan_from)
            if end < 0:
                self._scan_from = max(0, len(self._buffer) - len(TERMINATOR) + 1)
                break
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + len(TERMINATOR)]
            self._scan_from = 0
            # Tolerate stray blank lines between messages; never strip inside one, where
            # a trailing space is part of a value (Getvar answers ``Value: `` when empty).
            text = raw.decode("utf-8", errors="replace").lstrip("\r\n")
            if text:
                messages.append(text)
        if len(self._buffer) > self._max:
            raise AmiProtocolError(f"AMI message larger than {self._max} bytes")
        return messages

    def _read_banner(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise AmiProtocolError("no AMI banner line")
            return False
        line = bytes(self._buffer[:end])
        if not line.startswith(BANNER_PREFIX):
            raise AmiProtocolError("the peer is not an Asterisk manager (no AMI banner)")
        self.banner = line.decode("utf-8", errors="replace")
        del self._buffer[: end + 2]
        return True


def parse_message(text: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of one framed message, in order.

    Split on the first ``": "`` (main/manager.c writes ``"%s: %s\\r\\n"``); a line
    without one (``--END COMMAND--`` of old versions) is kept with an empty key.
    """
    pairs: list[tuple[str, str]] = []
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            pairs.append((key, value))
        elif line.endswith(":"):
            pairs.append((line[:-1], ""))
        elif line:
            pairs.append(("", line))
    return pairs


def check_value(field: str, value: str) -> str:
    """``value``, if it can travel as one header value; AmiValueError otherwise.

    The error names the field, never the value: values include the manager secret.
    """
    if _FORBIDDEN.search(value):
        raise AmiValueError(
            f"refusing to send AMI field {field!r}: its value contains CR, LF or NUL, "
            "which would end the header and could inject fields"
        )
    return value


def encode_action(fields: Iterable[tuple[str, FieldValue]]) -> bytes:
    """One action on the wire. A sequence value becomes one header per item."""
    lines: list[bytes] = []
    for key, value in fields:
        if not _KEY.fullmatch(key):
            raise AmiValueError(f"not an AMI field name: {key!r}")
        values = [value] if isinstance(value, str | int) else list(value)
        for item in values:
            text = check_value(key, str(item))
            line = f"{key}: {text}\r\n".encode()
            if len(line) > MAX_LINE_BYTES:
                raise AmiValueError(
                    f"refusing to send AMI field {key!r}: {len(line)} bytes, and Asterisk "
                    f"drops any line longer than {MAX_LINE_BYTES}"
                )
            lines.append(line)
    if len(lines) > MAX_HEADERS:
        raise AmiValueError(f"an AMI action holds at most {MAX_HEADERS} fields")
    return b"".join(lines) + b"\r\n"


# main/app.c __ast_app_separate_args, as AST_STANDARD_APP_ARGS calls it on every
# Originate ``Variable`` header (main/manager.c man_do_variable_value): ``,`` splits
# NAME=VALUE items unless inside quotes, () or []; quotes are removed, and a backslash
# is removed and makes the next character literal.
_APP_ARGS_SPECIAL = re.compile(r'([\\",()\[\]])')
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([^()=\r\n\x00]*\))?")


def encode_variable(name: str, value: str) -> str:
    """One Originate ``Variable`` header value, ``NAME=VALUE``, escaped.

    Without the escaping, a department name ``Sales, ALARM_ID=7`` would arrive as two
    variables: ``Sales`` and a forged ``ALARM_ID``.
    """
    if not _VARIABLE_NAME.fullmatch(name):
        raise AmiValueError(f"not a channel variable name: {name!r}")
    check_value(f"Variable {name}", value)
    escaped = _APP_ARGS_SPECIAL.sub(r"\\\1", value)
    return f"{name}={escaped}"
