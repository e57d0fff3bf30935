"""Drills in the store against a real PostgreSQL: a drill beside (never instead of) a real
alarm, the refusals, the scheduled slot's claim, the yield under the drill lock, the
statistics that leave drills out, and the CLI's drill start."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import asyncpg
import pytest

from fastagi.admin.drills import NO_SERVER, wait_for_drill
from fastagi.admin.drills import start_drill as admin_start_drill
from fastagi.domain.drill import Drill, report_event_id, started_event
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.alarms import _DRILL_LOCK as DRILL_LOCK
from fastagi.store.alarms import CHANNEL, DrillStartOutcome
from fastagi.store.changes import AlarmChange

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
SLOT = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)


@pytest.fixture
def store(db_pool: Pool) -> Stores:
    return Stores.over(db_pool)


async def department(store: Stores, name: str = "Emergency Room", devices: int = 1) -> int:
    await store.directory.add_paging_group(name)
    for index in range(devices):
        await store.directory.add_paging_device(name, f"PJSIP/27{index}")
    info = await store.directory.add_department(name, paging_group=name)
    return info.id


async def drill(
    store: Stores, department_id: int, *, slot: datetime | None = None, name="Emergency Room"
):
    spec = Drill(cycles=2, devices=("PJSIP/290",), requested_by="test", scheduled_for=slot)
    return await store.alarms.start_drill(
        department_id, name, "", spec, started_event(name, "", spec, {})
    )


async def real_alarm(store: Stores, department_id: int | None, extension: str = "101"):
    key = f"department:{department_id}" if department_id else f"extension:{extension}"
    event = HistoryEvent(EventKind.ACTIVATED, None, extension, "Emergency Room", {})
    return await store.alarms.activate(key, department_id, "Emergency Room", extension, [event])


async def test_a_drill_is_an_alarm_row_flagged_drill_with_its_event(
    store: Stores, db_pool: Pool
) -> None:
    department_id = await department(store)
    started = await drill(store, department_id)
    assert started.outcome is DrillStartOutcome.STARTED
    alarm = started.alarm
    assert alarm is not None
    assert alarm.is_active
    assert alarm.alarm_key == f"drill:department:{department_id}"
    assert alarm.drill == Drill(cycles=2, devices=("PJSIP/290",), requested_by="test")
    assert (await store.alarms.get_alarm(alarm.id)) == alarm
    [event] = await store.history.timeline(alarm.id)
    assert (event.kind, event.alarm_id, event.extension) == ("drill_started", alarm.id, None)
    assert event.details["cycles"] == 2
    # A flag the key must agree with: no real alarm under a drill's key, nor the reverse.
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute(
            "INSERT INTO alarms (alarm_key, department_name, extension)"
            " VALUES ('drill:department:1', 'x', '1')"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute("UPDATE alarms SET drill_devices = '{PJSIP/1&PJSIP/2}'")


async def test_a_real_alarm_during_a_drill_is_a_new_alarm_not_a_retrigger(store: Stores) -> None:
    department_id = await department(store)
    started = await drill(store, department_id)
    alarm, created = await real_alarm(store, department_id)
    assert created
    assert alarm.id != started.alarm.id if started.alarm else False
    assert not alarm.is_drill
    assert [a.id for a in await store.alarms.drills_to_yield(department_id)] == [
        started.alarm.id if started.alarm else 0
    ]


async def test_refusals_while_an_alarm_or_a_drill_runs(store: Stores) -> None:
    er = await department(store)
    ward = await department(store, "Ward 3")
    assert (await drill(store, er)).outcome is DrillStartOutcome.STARTED
    running = await drill(store, er)
    assert running.outcome is DrillStartOutcome.DRILL_RUNNING
    alarm, _ = await real_alarm(store, ward)
    refused = await drill(store, ward, name="Ward 3")
    assert refused.outcome is DrillStartOutcome.ALARM_ACTIVE
    assert refused.alarm is not None
    assert refused.alarm.id == alarm.id
    # An alarm of no department pages every group: no drill anywhere meanwhile.
    await store.alarms.deactivate(
        alarm.id, "t", "t", HistoryEvent(EventKind.DEACTIVATED, None, None, None)
    )
    unknown, _ = await real_alarm(store, None, "555")
    assert (await drill(store, ward, name="Ward 3")).outcome is DrillStartOutcome.ALARM_ACTIVE
    assert len(await store.alarms.drills_to_yield(None)) == 1  # ER's, for the unknown alarm
    assert unknown.department_id is None


async def test_a_scheduled_slot_runs_once_whoever_comes_and_whenever(store: Stores) -> None:
    department_id = await department(store)
    first, second = await asyncio.gather(
        drill(store, department_id, slot=SLOT), drill(store, department_id, slot=SLOT)
    )
    # The second server's drill runs, but it is the same slot's: taken, not refused.
    assert sorted([first.outcome.name, second.outcome.name]) == ["SLOT_TAKEN", "STARTED"]
    winner = first if first.outcome is DrillStartOutcome.STARTED else second
    assert winner.alarm is not None
    await store.alarms.deactivate(
        winner.alarm.id, "drill", "done", HistoryEvent(EventKind.DEACTIVATED, None, None, None)
    )
    # A server whose clock is late comes after the drill ended: still nothing.
    late = await drill(store, department_id, slot=SLOT)
    assert late.outcome is DrillStartOutcome.SLOT_TAKEN
    # The next slot is a new drill.
    assert (await drill(store, department_id, slot=SLOT + timedelta(days=1))).outcome is (
        DrillStartOutcome.STARTED
    )


async def test_a_drill_start_and_a_real_alarm_never_miss_each_other(store: Stores) -> None:
    """Raced many times: either the drill is refused (it saw the alarm) or the alarm's
    yield sees the drill. Without the drill lock, a drill could slip in unseen."""
    for round_number in range(40):
        department_id = await department(store, f"Race {round_number}")

        async def alarm_then_yield(department_id: int) -> list[int]:
            await real_alarm(store, department_id)
            return [d.id for d in await store.alarms.drills_to_yield(department_id)]

        started, yielded = await asyncio.gather(
            drill(store, department_id, name=f"Race {round_number}"),
            alarm_then_yield(department_id),
        )
        if started.outcome is DrillStartOutcome.STARTED:
            assert started.alarm is not None
            assert yielded == [started.alarm.id], round_number
        else:
            assert started.outcome is DrillStartOutcome.ALARM_ACTIVE, round_number


async def test_real_alarms_yield_drills_side_by_side_not_one_at_a_time(
    store: Stores, db_pool: Pool
) -> None:
    """A yield in progress (here held open: the drill lock as a yield holds it) keeps
    a drill from starting but not another alarm's yield. When yields queued one behind
    another, each holding a pooled connection, 1,000 alarms activated at once starved
    the pool and their activations timed out."""
    department_id = await department(store)
    await real_alarm(store, department_id)
    async with db_pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock_shared($1, 0)", DRILL_LOCK)
        async with asyncio.timeout(5):
            assert await store.alarms.drills_to_yield(department_id) == []
        starting = asyncio.ensure_future(drill(store, department_id))
        async with asyncio.timeout(5):
            # The drill start waits for the yield's transaction: its lock not granted.
            while not await holder.fetchval(  # noqa: ASYNC110
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = $1 AND objid = 0 AND objsubid = 2 AND NOT granted",
                DRILL_LOCK,
            ):
                await asyncio.sleep(0.01)
        assert not starting.done()
    started = await asyncio.wait_for(starting, 5)
    assert started.outcome is DrillStartOutcome.ALARM_ACTIVE


async def test_statistics_and_the_export_tell_drills_apart(store: Stores) -> None:
    department_id = await department(store)
    started = await drill(store, department_id)
    assert started.alarm is not None
    await store.alarms.deactivate(
        started.alarm.id, "drill", "done", HistoryEvent(EventKind.DEACTIVATED, None, None, None)
    )
    await real_alarm(store, department_id)
    since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    tallies = await store.alarms.tallies(since, until)
    assert [(t.drill, t.department_name, t.alarms, t.still_active) for t in tallies] == [
        (False, "Emergency Room", 1, 1),
        (True, "Emergency Room", 1, 0),
    ]
    assert [d.id for d in await store.alarms.drills(since, until)] == [started.alarm.id]
    events = await store.history.history(since, until)
    assert [(e.kind, e.drill) for e in events] == [
        ("drill_started", True),
        ("deactivated", True),
        ("activated", False),
    ]


async def test_the_cli_start_refuses_what_cannot_page_and_notifies_the_servers(
    store: Stores, db_pool: Pool
) -> None:
    department_id = await department(store)
    await store.directory.add_department("Empty")
    with pytest.raises(StoreError, match="unknown department 'Nowhere'"):
        await admin_start_drill(store, "Nowhere", cycles=1, by="cli:t")
    with pytest.raises(StoreError, match="has no paging devices"):
        await admin_start_drill(store, "Empty", cycles=1, by="cli:t")
    with pytest.raises(StoreError, match="between 1 and 20"):
        await admin_start_drill(store, "Emergency Room", cycles=0, by="cli:t")
    with pytest.raises(StoreError, match="not an Asterisk device"):
        await admin_start_drill(store, "Emergency Room", cycles=1, devices=["201"], by="cli:t")

    heard: asyncio.Queue[str] = asyncio.Queue()

    def listener(*args: object) -> None:
        heard.put_nowait(str(args[-1]))

    connection = await db_pool.acquire()
    try:
        await connection.add_listener(CHANNEL, listener)
        alarm = await admin_start_drill(store, "emergency room", cycles=3, by="cli:t")
        payload = await asyncio.wait_for(heard.get(), 5)
        await connection.remove_listener(CHANNEL, listener)
    finally:
        await db_pool.release(connection)
    assert AlarmChange.parse(payload) == AlarmChange(alarm.id, started=True)
    assert alarm.drill == Drill(cycles=3, requested_by="cli:t")
    assert alarm.department_id == department_id
    with pytest.raises(StoreError, match="a drill of the department runs already"):
        await admin_start_drill(store, "Emergency Room", cycles=1, by="cli:t")


async def test_a_drill_no_server_pages_is_stopped_and_reported_by_the_cli(store: Stores) -> None:
    await department(store, devices=2)
    alarm = await admin_start_drill(store, "Emergency Room", cycles=1, by="cli:t")
    end = await wait_for_drill(store, alarm.id, start_timeout=0.5, report_timeout=0.5, by="cli:t")
    assert (end.alarm.state, end.alarm.deactivated_by) == ("deactivated", "cli:t")
    assert end.alarm.deactivation_reason == NO_SERVER
    assert end.report is not None
    assert not end.recorded  # no server recorded one: the CLI did
    assert (end.report.cycles_paged, end.report.ok) == (0, False)
    [report] = [e for e in await store.history.timeline(alarm.id) if e.kind == "drill_report"]
    assert report.event_id == report_event_id(alarm.id)
    assert report.details["ending"] == "stopped"
    # Read again, it is the recorded one.
    again = await wait_for_drill(store, alarm.id, start_timeout=0, report_timeout=0, by="cli:t")
    assert again.recorded
    assert again.report == end.report
