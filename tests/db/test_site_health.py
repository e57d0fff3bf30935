"""The site's health shared by every server (fastagi/store/site_health.py): each
transition is written, with its event, by exactly one report, however many servers see
it at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.site_health import Failing, SiteHealthStore

STALE = 60.0


def event_for(degraded: bool, failing: Sequence[Failing]) -> HistoryEvent:
    kind = EventKind.HEALTH_DEGRADED if degraded else EventKind.HEALTH_RECOVERED
    return HistoryEvent(kind, None, None, None, {"failing": [f.name for f in failing]})


async def report(store: SiteHealthStore, instance: str, degraded: bool, stale: float = STALE):
    failing = [("paging-devices", "ICU has no reachable phone")] if degraded else []
    return await store.report(
        instance, degraded=degraded, failing=failing, stale_after=stale, event_for=event_for
    )


async def health_events(pool: asyncpg.Pool[asyncpg.Record]) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM alarm_events WHERE kind LIKE 'health_%' ORDER BY id")
    return [row["kind"] for row in rows]


async def test_two_servers_seeing_one_fault_at_once_change_the_state_once(
    db_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    store = SiteHealthStore(db_pool)
    first, second = await asyncio.gather(report(store, "a", True), report(store, "b", True))
    assert sorted([first.changed, second.changed]) == [False, True]
    assert first.degraded
    assert second.degraded
    assert await health_events(db_pool) == ["health_degraded"]

    both = await asyncio.gather(report(store, "a", False), report(store, "b", False))
    assert sorted(s.changed for s in both) == [False, True]
    assert await health_events(db_pool) == ["health_degraded", "health_recovered"]
    assert not await store.degraded()


async def test_the_site_stays_degraded_while_any_fresh_report_says_so(
    db_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    store = SiteHealthStore(db_pool)
    assert (await report(store, "a", True)).changed
    healthy_b = await report(store, "b", False)
    assert healthy_b.degraded
    assert not healthy_b.changed
    assert [(f.instance_id, f.name) for f in healthy_b.failing] == [("a", "paging-devices")]
    # a stops: its report is withdrawn, and b's next report clears the site.
    await store.withdraw("a")
    assert (await report(store, "b", False)).changed
    assert await health_events(db_pool) == ["health_degraded", "health_recovered"]


async def test_a_stale_report_no_longer_counts(db_pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store = SiteHealthStore(db_pool)
    assert (await report(store, "a", True)).changed
    # a went silent (killed) long ago.
    await db_pool.execute(
        "UPDATE health_reports SET reported_at = now() - interval '1 hour' WHERE instance_id = 'a'"
    )
    after = await report(store, "b", False)
    assert after.changed
    assert not after.degraded
