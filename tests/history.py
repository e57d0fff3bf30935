"""Lost and duplicated history, counted by what a double write would really produce.

``alarm_events.event_id`` is ``UNIQUE NOT NULL``: counting repeats of it is always 0, by
construction. A real double write is one logical event written twice under two
event_ids (a replay that re-created its events, a retry without the idempotency key, a
cycle recorded by the loop and again by a takeover). So events are compared by what
they say, never by their id:

- a ``page_cycle`` by its alarm and cycle number: a cycle is paged once;
- any other event by its kind, when it happened (``occurred_at`` is set where the event
  is made and travels unchanged through the journal) and its details (a call's events
  carry the call's uniqueid there), without what a replay adds to them.

And page cycles are compared with what the paging phones received: one INVITE per cycle,
none in a cycle's window but its own.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from fastagi.domain.events import HistoryEvent, page_started_at
from fastagi.store.journal import PROVISIONAL_DETAIL

# What a replay adds to a journalled event's details (fastagi/store/journal.py): the same
# event, before and after.
_REPLAY_DETAILS = frozenset({PROVISIONAL_DETAIL, "merged"})

Key = tuple[object, ...]


def event_key(
    kind: str, alarm_id: int | None, occurred_at: dt.datetime, details: Mapping[str, Any]
) -> Key:
    """What makes two rows the same logical event, whatever their event_ids."""
    if kind == "page_cycle" and isinstance(details.get("cycle"), int):
        return ("page_cycle", alarm_id, details["cycle"])
    said = {k: v for k, v in details.items() if k not in _REPLAY_DETAILS}
    return (kind, occurred_at, json.dumps(said, sort_keys=True))


def key_of(event: HistoryEvent) -> Key:
    return event_key(str(event.kind), event.alarm_id, event.occurred_at, event.details)


@dataclass(frozen=True)
class StoredRow:
    event_id: object
    kind: str
    alarm_id: int | None
    occurred_at: dt.datetime
    details: Mapping[str, Any]

    @property
    def key(self) -> Key:
        return event_key(self.kind, self.alarm_id, self.occurred_at, self.details)


async def stored_rows(pool: asyncpg.Pool[asyncpg.Record]) -> list[StoredRow]:
    """Every row of ``alarm_events``, oldest first."""
    rows = await pool.fetch(
        "SELECT event_id, kind, alarm_id, occurred_at, details FROM alarm_events"
        " ORDER BY occurred_at, id"
    )
    return [
        StoredRow(
            r["event_id"], r["kind"], r["alarm_id"], r["occurred_at"], json.loads(r["details"])
        )
        for r in rows
    ]


def duplicated(rows: Iterable[StoredRow]) -> dict[Key, int]:
    """Logical events written more than once, with how many times."""
    counts = collections.Counter(row.key for row in rows)
    return {key: n for key, n in counts.items() if n > 1}


def lost(expected: Iterable[HistoryEvent], rows: Iterable[StoredRow]) -> list[HistoryEvent]:
    """Events of ``expected`` that no row says."""
    stored = {row.key for row in rows}
    return [event for event in expected if key_of(event) not in stored]


def page_cycles(rows: Iterable[StoredRow], alarm_id: int) -> list[StoredRow]:
    """The alarm's page_cycle rows, in the order they were written."""
    return [r for r in rows if r.alarm_id == alarm_id and r.kind == "page_cycle"]


def cycle_numbers(rows: Iterable[StoredRow], alarm_id: int) -> list[int]:
    """The alarm's page_cycle numbers, in the order they were written."""
    return [r.details["cycle"] for r in page_cycles(rows, alarm_id)]


class Recorded(Protocol):
    """An event as a test reads it back: a row, a StoredEvent, a journalled HistoryEvent."""

    @property
    def details(self) -> Mapping[str, Any]: ...


R = TypeVar("R", bound=Recorded)


def sent_cycles(cycles: Iterable[R]) -> list[R]:
    """The ``page_cycle`` events of pages that were sent: not those recorded ``unsent``
    (no AMI connection), which reached nobody and which the loop follows at once, by
    design (fastagi/alarms/loop.py)."""
    return [cycle for cycle in cycles if not cycle.details.get("unsent")]


def page_starts(cycles: Iterable[Recorded]) -> list[dt.datetime]:
    """When each page began, as the server that paged it recorded (its ``page_cycle``
    event's ``started_at``), in time order: the schedule the server kept. The phone's
    INVITEs follow by however long Asterisk takes to dial, which a loaded machine
    stretches by up to seconds: a gap between INVITEs measures the machine too."""
    starts = [page_started_at(cycle.details) for cycle in cycles]
    assert None not in starts, "a page_cycle event without started_at"
    return sorted(start for start in starts if start is not None)


def doubled_cycles(numbers: Sequence[int]) -> list[int]:
    """Cycle numbers recorded more than once."""
    return sorted(n for n, count in collections.Counter(numbers).items() if count > 1)


def doubled_pages(starts: Sequence[dt.datetime], min_gap: float) -> list[float]:
    """The gaps (s) between one alarm's page starts that fall inside one cycle's window:
    shorter than ``min_gap``, each a page where one was due."""
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    return [round(g, 3) for g in gaps if g < min_gap]
