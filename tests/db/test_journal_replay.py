"""The journal replayed into real PostgreSQL: interrupted and repeated, each event is one
row; replayed page cycles count on the alarm row once.

Two ways a replay is cut short: the connection is lost before a batch is written (the
batch is not written), or right after its COMMIT, before the acknowledgement reaches
the server (the batch IS written, the journal does not know it and sends it again).
The second is the one the idempotency (``ON CONFLICT (event_id) DO NOTHING``) exists for,
so duplicates are counted by what the events say (tests/history.py), never by event_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from fastagi.config import JournalSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store.journal import Journal
from tests.history import cycle_numbers, duplicated, lost, stored_rows

pytestmark = pytest.mark.timeout(60)

EVENTS = 35
BATCH = 10


class CuttingStore:
    """The real store, whose pool is terminated at the second batch: before its write
    (``after_commit`` False) or after it was committed, as when the connection dies
    before the COMMIT's answer arrives (``after_commit`` True: the replay raises)."""

    def __init__(self, store: Stores, pool: asyncpg.Pool, *, after_commit: bool) -> None:
        self._store = store
        self._pool = pool
        self._after_commit = after_commit
        self.batches = 0

    async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
        self.batches += 1
        if self.batches != 2:
            return await self._store.history.replay_events(events)
        if not self._after_commit:
            self._pool.terminate()
            return await self._store.history.replay_events(events)
        await self._store.history.replay_events(events)
        self._pool.terminate()
        raise asyncpg.ConnectionDoesNotExistError("connection closed in the middle of operation")


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-write", "after-commit"])
async def test_replay_killed_halfway_and_repeated_writes_each_event_once(
    database_dsn: str, tmp_path: Path, after_commit: bool
) -> None:
    setup = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        store = Stores.over(setup)
        alarm, _ = await store.alarms.activate("extension:101", None, "unknown department", "101")
    finally:
        await setup.close()
    journal = Journal(JournalSettings(directory=tmp_path, replay_batch=BATCH))
    events = [
        HistoryEvent(EventKind.PAGE_CYCLE, alarm.id, "101", "x", {"cycle": n})
        for n in range(1, EVENTS + 1)
    ]
    for event in events:
        assert await journal.append(event)

    doomed = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    cutting = CuttingStore(Stores.over(doomed), doomed, after_commit=after_commit)
    with pytest.raises((asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError)):
        await journal.replay(cutting)
    left = await journal.events()
    # The first batch was written and cut; the second is still journalled (and, after its
    # commit, in PostgreSQL too: the next replay sends it again).
    assert len(left) == EVENTS - BATCH, len(left)

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        store = Stores.over(pool)
        await journal.replay(store.history)
        await journal.replay(store.history)  # and once more: nothing left, nothing new
        rows = await stored_rows(pool)
        numbers = cycle_numbers(rows, alarm.id)
        doubled = duplicated(rows)
        missing = lost(events, rows)
        print(
            f"cut {'after the commit' if after_commit else 'before the write'} of batch 2:"
            f" {len(numbers)} page_cycle rows, lost {len(missing)}, duplicated {len(doubled)}"
        )
        assert doubled == {}, doubled
        assert missing == [], missing
        assert sorted(numbers) == list(range(1, EVENTS + 1))
        row = await store.alarms.get_alarm(alarm.id)
        assert row is not None
        assert row.cycles == EVENTS
        assert await journal.events() == []
    finally:
        await pool.close()
