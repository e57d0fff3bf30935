"""What the store modules share: the connection type, row mapping, and the checks that
turn a bad administrator's request into a :class:`StoreError` with a readable message."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from fastagi.domain.directory import ExtensionPattern, is_extension
from fastagi.domain.language import CONFIRMATION_MODES, is_language_code
from fastagi.domain.policy import MAX_INTERVAL, MIN_INTERVAL

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_T = TypeVar("_T")


# pg_advisory_lock(PAGE_LOCK, alarm_id): held by an alarm's leader from just before a page
# until its devices were dialled; a deactivation waits for it (fastagi/store/leadership.py).
# "PAG"; the leader locks use [alarm] lock_namespace, drills "DRL".
PAGE_LOCK = 0x504147


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
    for the administrator, as it is. ``field`` names the argument of the fastagi/admin
    function the refusal is about (``"interval_seconds"``), when there is one, so a form
    can show the message next to that field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# Names are spoken in announcements and shown on phones: a paste accident of pages of text
# must not become one (and a btree index entry cannot exceed about 2.7 kB anyway).
MAX_NAME_LENGTH = 200


def row_to(cls: type[_T], row: asyncpg.Record, **computed: object) -> _T:
    """A row dataclass from a record that may hold more columns than it has fields: each
    field from the column of its name, unless ``computed`` gives it (a parsed JSON column,
    a nested dataclass, a column named otherwise)."""
    columns = {f.name: row[f.name] for f in fields(cls) if f.name not in computed}  # type: ignore[arg-type]
    return cls(**columns, **computed)


def check_name(name: str, what: str, field: str = "name") -> str:
    """The name without surrounding blanks; refused when empty, longer than
    MAX_NAME_LENGTH, or holding a NUL (PostgreSQL's text cannot store one)."""
    stripped = name.strip()
    if not stripped:
        raise StoreError(f"a {what} needs a name", field=field)
    if "\0" in stripped:
        raise StoreError(f"a {what} name may not contain a NUL character", field=field)
    if len(stripped) > MAX_NAME_LENGTH:
        raise StoreError(
            f"a {what} name may have at most {MAX_NAME_LENGTH} characters, not {len(stripped)}",
            field=field,
        )
    return stripped


def check_interval(seconds: int | None, field: str = "interval_seconds") -> None:
    if seconds is not None and not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise StoreError(
            f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, not {seconds}",
            field=field,
        )


def check_confirmation_mode(mode: str | None, field: str = "confirmation_mode") -> None:
    if mode is not None and mode not in CONFIRMATION_MODES:
        raise StoreError(
            f"confirmation mode must be one of {', '.join(CONFIRMATION_MODES)}, not '{mode}'",
            field=field,
        )


def check_language(code: str | None, field: str = "language") -> None:
    # The schema's CHECK (sql/009_language_modes.sql), said in words.
    if code is not None and not is_language_code(code):
        raise StoreError(f"not a language code like 'en' or 'pl': '{code}'", field=field)


def check_extension(extension: str, field: str = "extension") -> None:
    if not is_extension(extension):
        raise StoreError(f"malformed extension '{extension}': expected 1 to 20 digits", field=field)


def parse_pattern(pattern: str, field: str = "pattern") -> ExtensionPattern:
    try:
        return ExtensionPattern.parse(pattern)
    except ValueError as exc:
        raise StoreError(str(exc), field=field) from None
