"""EmergencyStore against PostgreSQL: the first acknowledgement wins, with its event."""

from __future__ import annotations

import asyncpg

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store.emergency import EmergencyStore


def ack_event(alarm_id: int, by: str) -> HistoryEvent:
    return HistoryEvent(EventKind.ACKNOWLEDGED, alarm_id, "101", "Ward E", {"by": by})


async def test_first_acknowledgement_wins_and_is_recorded_once(
    db_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    alarm, _ = await Stores.over(db_pool).alarms.activate("extension:101", None, "Ward E", "101")
    store = EmergencyStore(db_pool)
    summary = await store.alarm_summary(alarm.id)
    assert summary is not None
    assert (summary.is_active, summary.acknowledgement) == (True, None)
    assert (summary.department_name, summary.extension) == ("Ward E", "101")

    first = await store.acknowledge(
        alarm.id,
        by="PJSIP/241",
        attempt="a1",
        channel="PJSIP/241-1",
        event=ack_event(alarm.id, "PJSIP/241"),
    )
    second = await store.acknowledge(
        alarm.id, by="PJSIP/244", attempt="a2", channel=None, event=ack_event(alarm.id, "PJSIP/244")
    )
    assert first is not None
    assert second is not None
    assert (first.first, second.first) == (True, False)
    assert second.acknowledgement == first.acknowledgement
    assert first.acknowledgement.acknowledged_by == "PJSIP/241"
    summary = await store.alarm_summary(alarm.id)
    assert summary is not None
    assert summary.acknowledgement == first.acknowledgement
    kinds = await db_pool.fetch(
        "SELECT kind, alarm_id FROM alarm_events WHERE kind = 'acknowledged'"
    )
    assert [(r["kind"], r["alarm_id"]) for r in kinds] == [("acknowledged", alarm.id)]


async def test_unknown_alarm(db_pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store = EmergencyStore(db_pool)
    assert await store.alarm_summary(999) is None
    assert (
        await store.acknowledge(
            999, by="PJSIP/241", attempt=None, channel=None, event=ack_event(999, "x")
        )
        is None
    )
    assert await db_pool.fetchval("SELECT count(*) FROM alarm_events") == 0
