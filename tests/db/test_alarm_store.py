"""The alarm store against a real PostgreSQL: alarms, history, lockouts, configuration."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import pytest

from fastagi.domain import pins
from fastagi.domain.directory import Directory
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.alarms import CHANNEL

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


@pytest.fixture
def store(db_pool: Pool) -> Stores:
    return Stores.over(db_pool)


def event(kind: EventKind, alarm_id: int | None = None, **details: object) -> HistoryEvent:
    return HistoryEvent(kind, alarm_id, "105", "Emergency Room", details)


def trigger_events() -> list[HistoryEvent]:
    return [
        event(EventKind.CONFIRMED),
        event(EventKind.ACTIVATED),
        event(EventKind.RETRIGGERED),
    ]


async def emergency_room(store: Stores) -> int:
    await store.directory.add_paging_group("ER")
    await store.directory.add_paging_device("ER", "PJSIP/201")
    await store.directory.add_paging_device("ER", "PJSIP/202")
    info = await store.directory.add_department("Emergency Room", paging_group="ER")
    await store.directory.map_extensions("Emergency Room", "100-119")
    return info.id


async def activate(store: Stores, department_id: int, extension: str = "105"):
    return await store.alarms.activate(
        f"department:{department_id}", department_id, "Emergency Room", extension, trigger_events()
    )


# -- activation ------------------------------------------------------------------------


async def test_activate_creates_then_retriggers_the_same_alarm(store: Stores) -> None:
    department_id = await emergency_room(store)

    first, created = await activate(store, department_id)
    second, created_again = await activate(store, department_id, extension="110")
    timeline = await store.history.timeline(first.id)

    assert created is True
    assert created_again is False
    assert second.id == first.id
    assert first.is_active
    assert (first.alarm_key, first.department_id) == (f"department:{department_id}", department_id)
    assert (first.department_name, first.extension, first.cycles) == ("Emergency Room", "105", 0)
    assert second.extension == "105"  # the alarm keeps its first trigger
    # activated only when created, retriggered only when it existed; the rest both times
    assert [e.kind for e in timeline] == ["confirmed", "activated", "confirmed", "retriggered"]
    assert {e.alarm_id for e in timeline} == {first.id}
    assert await store.alarms.active_alarms() == [first]


async def test_other_keys_get_their_own_alarms(store: Stores) -> None:
    department_id = await emergency_room(store)

    ours, _ = await activate(store, department_id)
    unknown, created = await store.alarms.activate(
        "extension:555", None, "unknown department", "555", [event(EventKind.ACTIVATED)]
    )

    assert created
    assert unknown.id != ours.id
    assert unknown.department_id is None
    assert [a.id for a in await store.alarms.active_alarms()] == [ours.id, unknown.id]


async def test_concurrent_activations_make_one_alarm(store: Stores) -> None:
    department_id = await emergency_room(store)

    results = await asyncio.gather(*(activate(store, department_id) for _ in range(8)))

    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert len({alarm.id for alarm, _ in results}) == 1
    kinds = [e.kind for e in await store.history.timeline(results[0][0].id)]
    assert kinds.count("activated") == 1
    assert kinds.count("retriggered") == 7


@pytest.mark.parametrize("holder_commits", [True, False])
async def test_activations_waiting_on_an_uncommitted_one(
    store: Stores, db_pool: Pool, holder_commits: bool
) -> None:
    # A third connection inserts the active alarm and holds its transaction open, so both
    # activations surely meet it in the unique index and wait.
    department_id = await emergency_room(store)
    key = f"department:{department_id}"
    async with db_pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        held_id = await holder.fetchval(
            "INSERT INTO alarms (alarm_key, department_id, department_name, extension)"
            " VALUES ($1, $2, 'Emergency Room', '101') RETURNING id",
            key,
            department_id,
        )
        runs = [asyncio.create_task(activate(store, department_id)) for _ in range(2)]
        async with asyncio.timeout(10):
            # The server has no event to wait on: poll pg_locks.
            while await blocked_backends(db_pool) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        if holder_commits:
            await transaction.commit()
        else:
            await transaction.rollback()
        results = await asyncio.gather(*runs)

    ids = {alarm.id for alarm, _ in results}
    created = sorted(flag for _, flag in results)
    assert len(ids) == 1
    if holder_commits:
        assert ids == {held_id}
        assert created == [False, False]
    else:
        assert ids != {held_id}
        assert created == [False, True]
    assert len(await store.alarms.active_alarms()) == 1


async def blocked_backends(pool: Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
    )
    return count


async def test_a_failing_event_rolls_the_activation_back(store: Stores) -> None:
    department_id = await emergency_room(store)
    broken = event(EventKind.CONFIRMED, alarm_id=999_999)  # no such alarm: FK violation

    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.alarms.activate(
            f"department:{department_id}", department_id, "Emergency Room", "105", [broken]
        )

    assert await store.alarms.active_alarms() == []
    assert await store.history.history(datetime(2000, 1, 1, tzinfo=UTC), far_future()) == []


# -- cycles and deactivation -----------------------------------------------------------


async def test_record_cycle_counts_and_writes_the_event(store: Stores) -> None:
    department_id = await emergency_room(store)
    alarm, _ = await activate(store, department_id)

    await store.alarms.record_cycle(alarm.id, event(EventKind.PAGE_CYCLE, cycle=1))
    await store.alarms.record_cycle(alarm.id, event(EventKind.PAGE_CYCLE, cycle=2))
    after = await store.alarms.get_alarm(alarm.id)
    cycles = [e for e in await store.history.timeline(alarm.id) if e.kind == "page_cycle"]

    assert after is not None
    assert after.cycles == 2
    assert after.last_cycle_at is not None
    assert [e.details for e in cycles] == [{"cycle": 1}, {"cycle": 2}]
    with pytest.raises(StoreError, match="unknown alarm 424242"):
        await store.alarms.record_cycle(424242, event(EventKind.PAGE_CYCLE))


async def test_a_cycle_counted_at_its_start_is_never_counted_again(
    store: Stores, db_pool: Pool
) -> None:
    """The paging loop counts a cycle when its page starts (the service's gate); its
    event, recorded at the end or replayed from the journal after an outage, counts up
    to its number only, and ``last_cycle_at`` stays the latest page start."""
    department_id = await emergency_room(store)
    alarm, _ = await activate(store, department_id)
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def page(cycle: int, second: float) -> HistoryEvent:
        at = start + timedelta(seconds=second)
        return event(EventKind.PAGE_CYCLE, alarm.id, cycle=cycle, started_at=at.isoformat())

    # Cycle 1: counted at its start, then recorded when it ends.
    await db_pool.execute(
        "UPDATE alarms SET cycles = 1, last_cycle_at = $2 WHERE id = $1", alarm.id, start
    )
    first = page(1, 0)
    await store.alarms.record_cycle(alarm.id, first)
    # Cycle 2: paged while PostgreSQL was down, journalled, replayed (twice, and with the
    # cycle-1 event once more): counted once.
    second = page(2, 5)
    assert await store.history.replay_events([first, second]) == 1
    assert await store.history.replay_events([second]) == 0
    # An older cycle replayed late (another server's journal) moves nothing back.
    assert await store.history.replay_events([page(1, -10)]) == 1
    row = await store.alarms.get_alarm(alarm.id)

    assert row is not None
    assert (row.cycles, row.last_cycle_at) == (2, start + timedelta(seconds=5))
    assert await store.history.last_recorded_cycle(alarm.id) == 2
    other, _ = await store.alarms.activate("extension:555", None, "unknown department", "555")
    assert await store.history.last_recorded_cycle(other.id) == 0


async def test_deactivate_once_and_notify(store: Stores) -> None:
    department_id = await emergency_room(store)
    alarm, _ = await activate(store, department_id)
    notified: asyncio.Queue[int] = asyncio.Queue()
    close = await store.alarms.listen_changes(notified.put_nowait)
    try:
        done = await store.alarms.deactivate(
            alarm.id, "150", "drill over", event(EventKind.DEACTIVATED)
        )
        async with asyncio.timeout(5):
            notified_id = await notified.get()
        again = await store.alarms.deactivate(
            alarm.id, "150", "twice", event(EventKind.DEACTIVATED)
        )
    finally:
        await close()

    assert done is not None
    assert notified_id == alarm.id
    assert (done.state, done.deactivated_by, done.deactivation_reason) == (
        "deactivated",
        "150",
        "drill over",
    )
    assert done.deactivated_at is not None
    assert again is None
    assert not await store.alarms.is_active(alarm.id)
    assert await store.alarms.active_alarms() == []
    kinds = [e.kind for e in await store.history.timeline(alarm.id)]
    assert kinds.count("deactivated") == 1
    assert (
        await store.alarms.deactivate(424242, "150", "nope", event(EventKind.DEACTIVATED)) is None
    )


async def test_a_new_alarm_after_a_deactivation(store: Stores) -> None:
    department_id = await emergency_room(store)
    first, _ = await activate(store, department_id)
    await store.alarms.deactivate(first.id, "150", "done", event(EventKind.DEACTIVATED))

    second, created = await activate(store, department_id)

    assert created
    assert second.id != first.id


async def test_the_listener_ignores_foreign_payloads(store: Stores, db_pool: Pool) -> None:
    notified: asyncio.Queue[int] = asyncio.Queue()
    close = await store.alarms.listen_changes(notified.put_nowait)
    try:
        await db_pool.execute("SELECT pg_notify($1, 'not an id')", CHANNEL)
        await db_pool.execute("SELECT pg_notify($1, '17')", CHANNEL)
        async with asyncio.timeout(5):
            got = await notified.get()
    finally:
        await close()

    assert got == 17
    assert notified.empty()


# -- configuration read fresh ----------------------------------------------------------


async def test_the_interval_is_read_fresh(store: Stores) -> None:
    department_id = await emergency_room(store)
    alarm, _ = await activate(store, department_id)
    unknown, _ = await store.alarms.activate("extension:555", None, "unknown department", "555")

    default = await store.directory.interval_seconds(alarm)
    await store.policy.set_default_interval(30)
    new_default = await store.directory.interval_seconds(alarm)
    await store.directory.set_department_interval("emergency room", 10)
    own = await store.directory.interval_seconds(alarm)
    unknowns = await store.directory.interval_seconds(unknown)
    await store.directory.set_department_interval("Emergency Room", None)
    back = await store.directory.interval_seconds(alarm)

    assert (default, new_default, own, unknowns, back) == (60, 30, 10, 30, 30)
    assert await store.directory.paging_devices(alarm) == ("PJSIP/201", "PJSIP/202")
    # No department: every paging group's devices (an alarm never pages nobody).
    assert await store.directory.paging_devices(unknown) == ("PJSIP/201", "PJSIP/202")


async def test_the_directory_is_built_off_the_event_loop(
    store: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a large directory takes 20 ms (10,000 extensions) to 400 ms (100,000;
    bench/directory.py): on the loop, every call's AGI replies would wait for it."""
    threads: list[threading.Thread] = []
    build = Directory.build

    def spy(*args: Any, **kwargs: Any) -> Directory:
        threads.append(threading.current_thread())
        return build(*args, **kwargs)

    monkeypatch.setattr(Directory, "build", spy)
    await emergency_room(store)
    directory = await store.directory.load_directory()
    assert directory.department_for("105") is not None
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()


async def test_load_directory(store: Stores) -> None:
    department_id = await emergency_room(store)
    await store.directory.add_department("Reception", interval_seconds=20)
    await store.directory.map_extensions("Reception", "_1XX")
    await store.directory.map_extensions("Reception", "115")

    directory = await store.directory.load_directory()
    er = directory.department_for("105")
    reception = directory.department_for("115")

    assert er is not None
    assert (er.id, er.name, er.paging_group) == (department_id, "Emergency Room", "ER")
    assert er.devices == ("PJSIP/201", "PJSIP/202")
    assert reception is not None
    assert (reception.name, reception.interval_seconds, reception.devices) == (
        "Reception",
        20,
        (),
    )
    assert directory.department_for("150") == reception
    assert directory.department_for("999") is None
    assert directory.default_interval_seconds == 60


async def test_admin_errors_are_clear(store: Stores) -> None:
    await emergency_room(store)

    cases = [
        (
            store.directory.add_department("emergency room"),
            "department 'emergency room' already exists",
        ),
        (store.directory.add_department("X", paging_group="Nope"), "unknown paging group 'Nope'"),
        (
            store.directory.add_department("X", interval_seconds=2),
            "interval must be between 5 and 3600",
        ),
        (store.directory.remove_department("Foo"), "unknown department 'Foo'"),
        (store.directory.map_extensions("Foo", "101"), "unknown department 'Foo'"),
        (
            store.directory.map_extensions("Emergency Room", "200-100"),
            "malformed extension range '200-100': first is after last",
        ),
        (
            store.directory.map_extensions("Emergency Room", "100-119"),
            "'100-119' is already mapped to department 'Emergency Room'",
        ),
        (store.directory.unmap_extensions("_5XX"), "'_5XX' is not mapped to any department"),
        (store.directory.add_paging_group("er"), "paging group 'er' already exists"),
        (
            store.directory.add_paging_device("ER", "PJSIP/201"),
            "paging group 'ER' already has 'PJSIP/201'",
        ),
        (store.directory.add_paging_device("ER", "201"), "malformed device '201'"),
        (
            store.directory.remove_paging_device("ER", "PJSIP/299"),
            "paging group 'ER' has no 'PJSIP/299'",
        ),
        (store.policy.set_default_interval(4000), "interval must be between 5 and 3600"),
        (store.policy.set_policy(no_answer_policy="maybe"), "no-answer policy must be one of"),
        (store.policy.set_policy(pin_attempts=0), "PIN attempts must be between 1 and 10"),
        (store.deactivators.remove_deactivator("150"), "extension '150' is not a deactivator"),
        (
            store.deactivators.set_deactivator("15a", pins.hash_pin("1234")),
            "malformed extension '15a'",
        ),
        (store.deactivators.set_deactivator("150", "1234"), "not a PIN hash"),
    ]
    messages = []
    for call, _ in cases:
        with pytest.raises(StoreError) as caught:
            await call
        messages.append(str(caught.value))

    for message, (_, expected) in zip(messages, cases, strict=True):
        assert message.startswith(expected), message


async def test_policy_changes_only_what_is_given(store: Stores) -> None:
    before = await store.policy.load_settings()

    after = await store.policy.set_policy(pin_attempts=5, no_answer_policy="cancel")

    assert (before.no_answer_policy, before.pin_attempts) == ("activate", 3)
    assert (after.no_answer_policy, after.pin_attempts) == ("cancel", 5)
    assert after.confirmation_attempts == before.confirmation_attempts
    assert after.lockout_seconds == before.lockout_seconds
    assert await store.policy.load_settings() == after


# -- history ---------------------------------------------------------------------------


async def test_history_is_append_only(store: Stores, db_pool: Pool) -> None:
    await store.history.append_event(event(EventKind.ERROR, what="test"))

    for statement in (
        "UPDATE alarm_events SET kind = 'error'",
        "DELETE FROM alarm_events",
        "TRUNCATE alarm_events",
    ):
        with pytest.raises(asyncpg.RaiseError, match="alarm_events is append-only"):
            await db_pool.execute(statement)

    assert await db_pool.fetchval("SELECT count(*) FROM alarm_events") == 1


async def test_a_replayed_event_is_written_once(store: Stores) -> None:
    once = event(EventKind.ERROR, what="journal replay")

    first = await store.history.append_event(once)
    second = await store.history.append_event(once)
    batch = await store.history.append_events(
        [once, event(EventKind.ERROR), event(EventKind.ERROR)]
    )
    stored = await store.history.history(datetime(2000, 1, 1, tzinfo=UTC), far_future())

    assert (first, second, batch) == (True, False, 2)
    assert len(stored) == 3
    assert stored[0].event_id == once.event_id
    assert stored[0].occurred_at == once.occurred_at
    assert stored[0].details == {"what": "journal replay"}


async def test_history_range_includes_since_and_excludes_until(store: Stores) -> None:
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)
    for hours in range(5):
        await store.history.append_event(
            HistoryEvent(
                EventKind.PAGE_CYCLE,
                None,
                None,
                None,
                {"h": hours},
                occurred_at=base + timedelta(hours=hours),
            )
        )

    found = await store.history.history(base + timedelta(hours=1), base + timedelta(hours=3))

    assert [e.details["h"] for e in found] == [1, 2]


async def test_the_timeline_includes_the_events_of_the_alarms_calls(store: Stores) -> None:
    # Calls: A triggers, D re-triggers, C deactivates (with a wrong PIN first, and this
    # alarm and another one); B is someone else's call; the start-up lamp has no call.
    department_id = await emergency_room(store)
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)

    def at(second: float, kind: EventKind, uniqueid: str | None = None) -> HistoryEvent:
        details = {"uniqueid": uniqueid} if uniqueid else {}
        return HistoryEvent(
            kind, None, "105", None, details, occurred_at=base + timedelta(seconds=second)
        )

    key = f"department:{department_id}"
    await store.history.append_events(
        [
            at(0, EventKind.LAMP_CHANGED),
            at(1, EventKind.TRIGGERED, "call-A"),
            at(2, EventKind.PROMPT_PLAYED, "call-A"),
            at(2.5, EventKind.TRIGGERED, "call-B"),
            at(4, EventKind.TRIGGERED, "call-D"),
            at(6, EventKind.DEACTIVATION_FAILED, "call-C"),
        ]
    )
    alarm, _ = await store.alarms.activate(
        key, department_id, "Emergency Room", "105", [at(3, EventKind.ACTIVATED, "call-A")]
    )
    await store.alarms.activate(
        key, department_id, "Emergency Room", "110", [at(5, EventKind.RETRIGGERED, "call-D")]
    )
    other, _ = await store.alarms.activate(
        "extension:555", None, "unknown department", "555", [at(3.5, EventKind.ACTIVATED, "B2")]
    )
    await store.alarms.record_cycle(alarm.id, at(3.2, EventKind.PAGE_CYCLE))
    for done, second in ((alarm, 7), (other, 8)):
        await store.alarms.deactivate(
            done.id, "150", "PIN", at(second, EventKind.DEACTIVATED, "call-C")
        )

    timeline = await store.history.timeline(alarm.id)
    others = await store.history.timeline(other.id)

    assert [(e.kind, e.details.get("uniqueid"), e.alarm_id) for e in timeline] == [
        ("triggered", "call-A", None),
        ("prompt_played", "call-A", None),
        ("activated", "call-A", alarm.id),
        ("page_cycle", None, alarm.id),
        ("triggered", "call-D", None),
        ("retriggered", "call-D", alarm.id),
        ("deactivation_failed", "call-C", None),
        ("deactivated", "call-C", alarm.id),
    ]
    assert [e.kind for e in others] == ["activated", "deactivation_failed", "deactivated"]
    assert [e.alarm_id for e in others] == [other.id, None, other.id]


def far_future() -> datetime:
    return datetime(2100, 1, 1, tzinfo=UTC)


# -- deactivators and lockouts ---------------------------------------------------------


async def test_deactivators(store: Stores) -> None:
    created = await store.deactivators.set_deactivator("150", pins.hash_pin("2580"))
    changed = await store.deactivators.set_deactivator("150", pins.hash_pin("1397"))
    stored = await store.deactivators.deactivator_pin_hash("150")
    listed = await store.deactivators.list_deactivators()
    await store.deactivators.remove_deactivator("150")

    assert (created, changed) == (True, False)
    assert stored is not None
    assert pins.verify_pin("1397", stored)
    assert [d.extension for d in listed] == ["150"]
    assert listed[0].locked_until is None
    assert await store.deactivators.deactivator_pin_hash("150") is None
    assert await store.deactivators.deactivator_pin_hash("999") is None


async def test_lockout_after_max_failures(store: Stores) -> None:
    results = [await store.deactivators.record_pin_failure("150", 3, 300) for _ in range(3)]
    locked = await store.deactivators.lockout_until("150")
    other = await store.deactivators.lockout_until("151")
    await store.deactivators.clear_pin_failures("150")

    assert results[:2] == [None, None]
    until = results[2]
    assert until is not None
    now = datetime.now(UTC)
    assert now + timedelta(seconds=290) < until < now + timedelta(seconds=310)
    assert locked == until
    assert other is None
    assert await store.deactivators.lockout_until("150") is None


async def test_old_failures_are_forgotten(store: Stores, db_pool: Pool) -> None:
    await store.deactivators.record_pin_failure("150", 3, 300)
    await store.deactivators.record_pin_failure("150", 3, 300)
    await db_pool.execute(
        "UPDATE deactivation_lockouts SET last_failure_at = now() - interval '10 minutes'"
    )

    third = await store.deactivators.record_pin_failure("150", 3, 300)
    fourth = await store.deactivators.record_pin_failure("150", 3, 300)
    fifth = await store.deactivators.record_pin_failure("150", 3, 300)

    assert (third, fourth) == (None, None)
    assert fifth is not None


async def test_a_lockout_ends_by_itself(store: Stores, db_pool: Pool) -> None:
    assert await store.deactivators.record_pin_failure("150", 1, 300) is not None
    await db_pool.execute(
        "UPDATE deactivation_lockouts SET locked_until = now() - interval '1 second'"
    )

    assert await store.deactivators.lockout_until("150") is None
    assert (await store.deactivators.list_deactivators()) == []


async def test_no_lockout_when_it_is_turned_off(store: Stores, db_pool: Pool) -> None:
    results = [await store.deactivators.record_pin_failure("150", 1, 0) for _ in range(3)]

    assert results == [None, None, None]
    assert await store.deactivators.lockout_until("150") is None
    assert await db_pool.fetchval("SELECT count(*) FROM deactivation_lockouts") == 0
