"""The journal replayed into real PostgreSQL: interrupted (the pool closed mid-replay) and
repeated, each event is one row; replayed page cycles count on the alarm row once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from fastagi.config import JournalSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store.journal import Journal

pytestmark = pytest.mark.timeout(60)


class ClosingStore:
    """The real store, whose pool is closed (terminated) after the first batch."""

    def __init__(self, store: Stores, pool: asyncpg.Pool) -> None:
        self._store = store
        self._pool = pool
        self.batches = 0

    async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
        self.batches += 1
        if self.batches == 2:
            self._pool.terminate()
        return await self._store.history.replay_events(events)


async def test_replay_killed_halfway_and_repeated_writes_each_event_once(
    database_dsn: str, tmp_path: Path
) -> None:
    setup = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        store = Stores.over(setup)
        alarm, _ = await store.alarms.activate("extension:101", None, "unknown department", "101")
    finally:
        await setup.close()
    journal = Journal(JournalSettings(directory=tmp_path, replay_batch=10))
    events = [
        HistoryEvent(EventKind.PAGE_CYCLE, alarm.id, "101", "x", {"cycle": n}) for n in range(1, 36)
    ]
    for event in events:
        assert await journal.append(event)

    doomed = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    closing = ClosingStore(Stores.over(doomed), doomed)
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await journal.replay(closing)
    left = await journal.events()
    assert 0 < len(left) < len(events)  # the first batch was written and cut

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        store = Stores.over(pool)
        await journal.replay(store.history)
        await journal.replay(store.history)  # and once more: nothing left, nothing new
        rows = await pool.fetch(
            "SELECT event_id, count(*) AS n FROM alarm_events WHERE kind = 'page_cycle'"
            " GROUP BY event_id"
        )
        assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
        assert all(r["n"] == 1 for r in rows)
        row = await store.alarms.get_alarm(alarm.id)
        assert row is not None
        assert row.cycles == 35
        assert await journal.events() == []
    finally:
        await pool.close()
