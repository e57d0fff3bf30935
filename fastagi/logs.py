"""Structured logging: one line per record, ``key=value`` pairs after the message.

Records about a call carry ``agi_uniqueid`` and ``peer`` (passed with ``extra=``), so the
lines of one call can be found with a grep on its Asterisk uniqueid.
"""

from __future__ import annotations

import logging
import re
import sys

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # A set difference and one regex per value: this runs for every line a call logs
        # (about 25 us a line before, 2026-11-29; docs/performance.md).
        keys = record.__dict__.keys() - _STANDARD_ATTRIBUTES
        if keys:
            extras = record.__dict__
            pairs = " ".join(
                f"{key}={_quote(extras[key])}" for key in sorted(keys) if not key.startswith("_")
            )
            if pairs:
                head, _, tail = line.partition("\n")
                line = f"{head} {pairs}" + (f"\n{tail}" if tail else "")
        return line


_NEEDS_QUOTES = re.compile(r'[ "=\n\r\t]')


def _quote(value: object) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
