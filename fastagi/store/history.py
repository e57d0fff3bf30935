"""The history table ``alarm_events``: every event, from trigger to deactivation, once.

Each event carries a UUID ``event_id`` made where it happened; writing is
``ON CONFLICT (event_id) DO NOTHING``, so an event replayed from the journal
(fastagi/store/journal.py) after an outage, or twice, is written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from fastagi.domain.events import EventKind, HistoryEvent, page_started_at
from fastagi.store._common import COUNT_CYCLE, Connection, row_to

# How much of an event's department or extension text the history's indexes hold
# (sql/006_history_pages.sql): an index entry may not exceed about 2.7 kB, and an event
# must never be refused for the length of a name.
INDEXED_TEXT = 100


@dataclass(frozen=True)
class HistoryFilter:
    """The events with ``since <= occurred_at < until`` and, for each one given, of that
    department, extension and kind (exact texts, as recorded)."""

    since: datetime
    until: datetime
    department: str | None = None
    extension: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class EventKey:
    """An event's place in the history's order (``occurred_at``, then ``id``): where a
    page of it ends, and the next begins."""

    occurred_at: datetime
    id: int


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event_id: UUID
    occurred_at: datetime
    alarm_id: int | None
    kind: str  # an EventKind value; str so rows of a newer version still load
    extension: str | None
    department: str | None
    details: dict[str, Any]
    # The event belongs to a drill (fastagi/domain/drill.py); filled in by history().
    drill: bool = False


class HistoryStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def append_event(self, event: HistoryEvent) -> bool:
        """Write one event; False when its event_id was already written (a replay)."""
        async with self._pool.acquire() as connection:
            return await insert_event(connection, event)

    async def append_events(self, events: Iterable[HistoryEvent]) -> int:
        """Write events in one transaction; return how many were new."""
        async with self._pool.acquire() as connection, connection.transaction():
            return sum([await insert_event(connection, event) for event in events])

    async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
        """Write journalled events (fastagi/store/journal.py) in one transaction; return
        how many were new. A new ``page_cycle`` event also counts its cycle on the alarm
        row, as :meth:`record_cycle` does (``cycles`` only grows to the event's number: a
        replay repeated, or a cycle counted at its start, is never counted twice)."""
        async with self._pool.acquire() as connection, connection.transaction():
            new = 0
            for event in events:
                if not await insert_event(connection, event):
                    continue
                new += 1
                cycle = event.details.get("cycle")
                if (
                    event.kind is EventKind.PAGE_CYCLE
                    and event.alarm_id is not None
                    and isinstance(cycle, int)
                    and not event.details.get("merged")
                ):
                    await connection.execute(
                        COUNT_CYCLE, event.alarm_id, cycle, cycle_started_at(event)
                    )
            return new

    async def find_event(self, event_id: UUID) -> StoredEvent | None:
        """The event with this ``event_id``, if it was written."""
        row = await self._pool.fetchrow("SELECT * FROM alarm_events WHERE event_id = $1", event_id)
        return None if row is None else _event(row)

    async def last_recorded_cycle(self, alarm_id: int) -> int:
        """The highest cycle number among the alarm's ``page_cycle`` events (0: none)."""
        cycle: int = await self._pool.fetchval(
            """
            SELECT coalesce(max((details ->> 'cycle')::int), 0) FROM alarm_events
            WHERE alarm_id = $1 AND kind = 'page_cycle'
              AND jsonb_typeof(details -> 'cycle') = 'number'
            """,
            alarm_id,
        )
        return cycle

    async def timeline(self, alarm_id: int) -> list[StoredEvent]:
        """The alarm's story, oldest first: its own events, and those of its calls.

        A call's steps (triggered, prompt_played, confirmed, a wrong PIN, ...) happen
        before or outside any alarm and have no alarm id; the call's uniqueid links them.
        Every call that appears in the alarm's own events (activated, retriggered,
        deactivated carry it) brings its events without an alarm id along.
        """
        rows = await self._pool.fetch(
            """
            WITH own AS (
                SELECT * FROM alarm_events WHERE alarm_id = $1
            ), calls AS (
                SELECT DISTINCT details ->> 'uniqueid' AS uniqueid
                FROM own
                WHERE details ->> 'uniqueid' IS NOT NULL
            )
            SELECT * FROM own
            UNION ALL
            SELECT e.* FROM alarm_events e
            JOIN calls c ON e.details ->> 'uniqueid' = c.uniqueid
            WHERE e.alarm_id IS NULL
            ORDER BY occurred_at, id
            """,
            alarm_id,
        )
        return [_event(row) for row in rows]

    async def events(
        self,
        wanted: HistoryFilter,
        *,
        after: EventKey | None = None,
        newest_first: bool = True,
        limit: int = 50,
    ) -> list[StoredEvent]:
        """A page of the history: see :func:`page_query`."""
        statement, arguments = page_query(
            wanted, after=after, newest_first=newest_first, limit=limit
        )
        rows = await self._pool.fetch(statement, *arguments)
        return [_event(row) for row in rows]

    async def latest_drill_reports(self) -> list[StoredEvent]:
        """Each department's most recent ``drill_report``: the drills' results now."""
        rows = await self._pool.fetch(
            """
            SELECT DISTINCT ON (department) *
            FROM alarm_events
            WHERE kind = $1
            ORDER BY department, occurred_at DESC, id DESC
            """,
            EventKind.DRILL_REPORT.value,
        )
        return [_event(row) for row in rows]

    async def history(self, since: datetime, until: datetime) -> list[StoredEvent]:
        """Every event with ``since <= occurred_at < until``, oldest first, each marked
        when it belongs to a drill (so an export can leave drills out of statistics)."""
        rows = await self._pool.fetch(
            """
            SELECT e.*, coalesce(a.drill, false) AS drill
            FROM alarm_events e
            LEFT JOIN alarms a ON a.id = e.alarm_id
            WHERE e.occurred_at >= $1 AND e.occurred_at < $2
            ORDER BY e.occurred_at, e.id
            """,
            since,
            until,
        )
        return [_event(row) for row in rows]


def page_query(
    wanted: HistoryFilter, *, after: EventKey | None, newest_first: bool, limit: int
) -> tuple[str, list[Any]]:
    """The statement of one page of the history and its arguments: the ``limit`` events of
    ``wanted`` that come after ``after`` in the order asked for (newest or oldest first).

    Keyset pagination: each page starts from the previous page's last key, read from an
    index in order (``(occurred_at, id)``, or ``(kind | department | extension,
    occurred_at, id)`` for a filtered page), so the thousandth page costs what the first
    does. The redundant ``occurred_at <=`` bound is what the index scan can start from.
    """
    arguments: list[Any] = [wanted.since, wanted.until]

    def argument(value: object) -> str:
        arguments.append(value)
        return f"${len(arguments)}"

    conditions = ["occurred_at >= $1", "occurred_at < $2"]
    if wanted.kind is not None:
        conditions.append(f"kind = {argument(wanted.kind)}")
    for column, value in (("department", wanted.department), ("extension", wanted.extension)):
        if value is not None:
            # What the index holds. For a text shorter than that it is also exact (a
            # longer one's first characters are longer than it); a second, redundant
            # condition would make the planner count the rows it selects twice.
            given = argument(value[:INDEXED_TEXT])
            conditions.append(f"left({column}, {INDEXED_TEXT}) = {given}")
            if len(value) >= INDEXED_TEXT:
                conditions.append(f"{column} = {argument(value)}")
    if after is not None:
        at, key = argument(after.occurred_at), argument(after.id)
        if newest_first:
            conditions.append(f"occurred_at <= {at} AND (occurred_at < {at} OR id < {key})")
        else:
            conditions.append(f"occurred_at >= {at} AND (occurred_at > {at} OR id > {key})")
    order = "DESC" if newest_first else "ASC"
    # Every fragment is a fixed text of this function; every value is an argument.
    statement = (
        # drill: the event belongs to a drill (an export leaves drills out of statistics).
        "SELECT alarm_events.*, coalesce((SELECT a.drill FROM alarms a"  # noqa: S608
        " WHERE a.id = alarm_events.alarm_id), false) AS drill"
        f" FROM alarm_events WHERE {' AND '.join(conditions)}"
        f" ORDER BY occurred_at {order}, id {order} LIMIT {argument(limit)}"
    )
    return statement, arguments


def cycle_started_at(event: HistoryEvent) -> datetime:
    """When a ``page_cycle`` event's page started (page_started_at), else when the event
    was made (its end)."""
    return page_started_at(event.details) or event.occurred_at


async def insert_event(connection: Connection, event: HistoryEvent) -> bool:
    status = await connection.execute(
        """
        INSERT INTO alarm_events
            (event_id, occurred_at, alarm_id, kind, extension, department, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
        ON CONFLICT (event_id) DO NOTHING
        """,
        event.event_id,
        event.occurred_at,
        event.alarm_id,
        str(event.kind),
        event.extension,
        event.department,
        event.details_json,
    )
    return status == "INSERT 0 1"


def for_alarm(event: HistoryEvent, alarm_id: int) -> HistoryEvent:
    return event.with_alarm(alarm_id) if event.alarm_id is None else event


def _event(row: asyncpg.Record) -> StoredEvent:
    return row_to(
        StoredEvent,
        row,
        details=json.loads(row["details"]),
        drill=bool(row.get("drill", False)),
    )
