"""What the store modules share: the connection type, row mapping, and the checks that
turn a bad administrator's request into a :class:`StoreError` with a readable message."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from fastagi.domain.directory import ExtensionPattern, is_extension
from fastagi.domain.policy import MAX_INTERVAL, MIN_INTERVAL

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_T = TypeVar("_T")


# Counts a cycle on the alarm row, idempotently: both only grow, so a cycle counted at its
# start (fastagi/store/leadership.py), again with its event, or by a replay of it is
# counted once. $2: the cycle's number (NULL: one more than counted); $3: when its page
# started (NULL: now, the statement's own clock).
COUNT_CYCLE = """
UPDATE alarms SET cycles = greatest(cycles, coalesce($2::int, cycles + 1)),
    last_cycle_at = greatest(last_cycle_at, coalesce($3::timestamptz, clock_timestamp()))
WHERE id = $1
"""


class StoreError(ValueError):
    """A request the data refuses (unknown name, duplicate, out of range): the message is
    for the administrator, as it is."""


def row_to(cls: type[_T], row: asyncpg.Record) -> _T:
    """A row dataclass from a record that may hold more columns than it has fields."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


def check_name(name: str, what: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise StoreError(f"a {what} needs a name")
    return stripped


def check_interval(seconds: int | None) -> None:
    if seconds is not None and not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise StoreError(
            f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, not {seconds}"
        )


def check_extension(extension: str) -> None:
    if not is_extension(extension):
        raise StoreError(f"malformed extension '{extension}': expected 1 to 20 digits")


def parse_pattern(pattern: str) -> ExtensionPattern:
    try:
        return ExtensionPattern.parse(pattern)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
