"""Alarms the dialplan raised without a server: reading them from astdb
(fastagi/domain/fallback.py) and adopting them (fastagi/alarms/fallback.py), with a fake
Asterisk manager and fake alarm service; the real ones are in tests/e2e/test_fallback.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from fastagi.alarms.fallback import FallbackAdopter
from fastagi.alarms.outage import Outage
from fastagi.ami import AmiConnectionLost, Message
from fastagi.domain.directory import Department
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.fallback import FAMILY, UNKNOWN_EXTENSION, parse_entry, parse_tree
from fastagi.store.history import StoredEvent

ID = "pbx-1795788205.12"
RAISED = datetime(2026, 11, 27, 14, 3, 25, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 14, 3, 40, tzinfo=UTC)
WARD = Department(3, "Ward 3", 1, None, ("PJSIP/282",))


# ---- the astdb entries ---------------------------------------------------------------------


def test_parse_tree_pairs_entries_with_their_page_counts() -> None:
    found = parse_tree(
        {
            ID: f"101|{int(RAISED.timestamp())}",
            f"{ID}/pages": "3",
            "1795788100.1": "102|1795788100",
        }
    )
    assert [(e.id, e.extension, e.raised_at, e.pages) for e in found.entries] == [
        ("1795788100.1", "102", datetime.fromtimestamp(1795788100, UTC), None),
        (ID, "101", RAISED, 3),
    ]
    assert found.orphans == ()
    assert found.foreign == ()


def test_a_page_count_without_its_entry_is_an_orphan_and_strange_keys_are_foreign() -> None:
    found = parse_tree({f"{ID}/pages": "2", "x y": "1|2", f"{ID}/other": "1", "../etc": "1"})
    assert found.entries == ()
    assert found.orphans == (f"{ID}/pages",)
    assert found.foreign == ("../etc", f"{ID}/other", "x y")


@pytest.mark.parametrize(
    ("value", "extension", "raised_at"),
    [
        ("101|1795788205", "101", datetime.fromtimestamp(1795788205, UTC)),
        ("|1795788205", UNKNOWN_EXTENSION, datetime.fromtimestamp(1795788205, UTC)),
        ("alice|soon", UNKNOWN_EXTENSION, None),
        ("", UNKNOWN_EXTENSION, None),
        ("1" * 21 + "|1", UNKNOWN_EXTENSION, datetime.fromtimestamp(1, UTC)),
        ("101|99999999999999999999", "101", None),
    ],
)
def test_a_garbled_value_still_makes_an_alarm(
    value: str, extension: str, raised_at: datetime | None
) -> None:
    entry = parse_entry(ID, value, "x")
    assert (entry.extension, entry.raised_at, entry.pages, entry.value) == (
        extension,
        raised_at,
        None,
        value,
    )


def test_event_ids_are_the_same_everywhere_and_differ_by_purpose_and_entry() -> None:
    one = parse_entry(ID, "101|1", None)
    again = parse_entry(ID, "999|2", "5")
    other = parse_entry("pbx-1795788205.13", "101|1", None)
    assert one.event_id("activation") == again.event_id("activation")
    assert one.event_id("activation") != one.event_id("triggered_fallback")
    assert one.event_id("activation") != other.event_id("activation")


# ---- adopting ----------------------------------------------------------------------------------


@dataclass
class FakeAlarm:
    id: int
    department_name: str


@dataclass
class FakeActivation:
    alarm: FakeAlarm
    created: bool


@dataclass
class World:
    """What Asterisk and PostgreSQL hold, shared by every adopter (every "server"): the
    astdb, the alarm rows by key, and the history by event_id (written once each)."""

    astdb: dict[str, str] = field(default_factory=dict)
    alarms: dict[str, FakeAlarm] = field(default_factory=dict)
    history: dict[UUID, HistoryEvent] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    fail_activate: bool = False

    def write(self, event: HistoryEvent) -> None:
        self.history.setdefault(event.event_id, event)

    def kinds(self) -> list[str]:
        return sorted(str(e.kind) for e in self.history.values())


class FakeAmi:
    def __init__(self, world: World) -> None:
        self.world = world
        self.callbacks: list[Any] = []
        self.hooks: list[Any] = []
        self.connected = True
        self.scanned = asyncio.Event()
        self.deleted = asyncio.Event()

    async def db_tree(self, family: str) -> dict[str, str]:
        assert family == FAMILY
        if not self.connected:
            raise AmiConnectionLost("down")
        tree = dict(self.world.astdb)
        self.scanned.set()
        await asyncio.sleep(0)  # the other adopter may run meanwhile, as over a socket
        return tree

    async def db_delete(self, family: str, key: str) -> None:
        if not self.connected:
            raise AmiConnectionLost("down")
        self.world.log.append(f"delete {key}")
        self.world.astdb.pop(key, None)
        self.deleted.set()

    async def get_variable(self, name: str) -> str | None:
        return "PJSIP/280"

    def subscribe(self, callback: Any, *names: str) -> Any:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def on_reconnect(self, hook: Any) -> Any:
        self.hooks.append(hook)
        return lambda: self.hooks.remove(hook)


class FakeAlarms:
    """AlarmService.activate as the store does it: one active alarm per key, and of the
    activated/retriggered pair only the event of what happened is written."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.calls: list[tuple[str, Department | None, str, UUID | None]] = []

    async def lookup(self, extension: str) -> Department | None:
        return WARD if extension == "101" else None

    async def activate(
        self,
        extension: str,
        department: Department | None,
        *,
        uniqueid: str,
        event_id: UUID | None = None,
    ) -> FakeActivation:
        self.calls.append((extension, department, uniqueid, event_id))
        await asyncio.sleep(0)
        if self.world.fail_activate:
            raise OSError("PostgreSQL and the journal both failed")
        key = f"department:{department.id}" if department else f"extension:{extension}"
        created = key not in self.world.alarms
        if created:
            number = len(self.world.alarms) + 1
            self.world.alarms[key] = FakeAlarm(number, department_name(department))
        alarm = self.world.alarms[key]
        kind = EventKind.ACTIVATED if created else EventKind.RETRIGGERED
        self.world.write(
            HistoryEvent(
                kind, alarm.id, extension, alarm.department_name, event_id=event_id or uuid4()
            )
        )
        self.world.log.append(f"activate {uniqueid}")
        return FakeActivation(alarm, created)


def department_name(department: Department | None) -> str:
    return department.name if department else "unknown department"


class FakeHistory:
    def __init__(self, world: World) -> None:
        self.world = world

    async def find_event(self, event_id: UUID) -> StoredEvent | None:
        event = self.world.history.get(event_id)
        if event is None:
            return None
        return StoredEvent(
            1, event.event_id, event.occurred_at, event.alarm_id, str(event.kind), None, None, {}
        )


class FakeRecorder:
    def __init__(self, world: World) -> None:
        self.world = world
        self.outage = Outage()
        self.timeout = 1.0

    async def record(self, event: HistoryEvent) -> None:
        self.world.log.append(f"record {event.kind}")
        self.world.write(event)


def adopter(world: World, name: str = "a") -> tuple[FallbackAdopter, FakeAlarms, FakeAmi]:
    ami, alarms = FakeAmi(world), FakeAlarms(world)
    return (
        FallbackAdopter(
            ami,  # type: ignore[arg-type]
            alarms,
            FakeHistory(world),
            FakeRecorder(world),  # type: ignore[arg-type]
            instance_id=name,
            scan_interval=60.0,
            clock=lambda: NOW,
        ),
        alarms,
        ami,
    )


def raised(world: World, entry_id: str = ID, extension: str = "101", pages: int = 2) -> None:
    world.astdb[entry_id] = f"{extension}|{int(RAISED.timestamp())}"
    world.astdb[f"{entry_id}/pages"] = str(pages)


async def test_adoption_raises_records_then_deletes_the_entry_last() -> None:
    world = World()
    raised(world)
    fallback, alarms, _ = adopter(world)
    [adoption] = await fallback.scan("start-up")
    assert (adoption.alarm_id, adoption.outcome) == (1, "created")
    entry = adoption.entry
    assert alarms.calls == [("101", WARD, ID, entry.event_id("activation"))]
    # The entry goes only once the alarm and its history are written: a server that
    # dies midway leaves it for the next scan, and the dialplan pages on meanwhile.
    assert world.log == [
        f"activate {ID}",
        "record triggered_fallback",
        f"delete {ID}",
        f"delete {ID}/pages",
    ]
    assert world.astdb == {}
    fallback_event = world.history[entry.event_id("triggered_fallback")]
    assert fallback_event.occurred_at == RAISED
    assert (fallback_event.alarm_id, fallback_event.extension, fallback_event.department) == (
        1,
        "101",
        "Ward 3",
    )
    assert dict(fallback_event.details) == {
        "uniqueid": ID,
        "raised_at": RAISED.isoformat(),
        "dialplan_pages": 2,
        "astdb_value": f"101|{int(RAISED.timestamp())}",
        "adopted_via": "start-up",
        "adopted_after": 15.0,
        "outcome": "created",
        "instance": "a",
    }


async def test_an_entry_that_cannot_be_activated_stays_for_the_next_scan() -> None:
    world = World(fail_activate=True)
    raised(world)
    fallback, _, _ = adopter(world)
    assert await fallback.scan("periodic") == []
    assert ID in world.astdb
    world.fail_activate = False
    [adoption] = await fallback.scan("periodic")
    assert adoption.outcome == "created"
    assert world.astdb == {}


async def test_two_servers_adopting_at_once_write_one_alarm_and_its_history_once() -> None:
    world = World()
    raised(world)
    raised(world, "pbx-1795788206.13", extension="150")  # unknown department
    first, _, _ = adopter(world, "a")
    second, _, _ = adopter(world, "b")
    await asyncio.gather(first.scan("user event"), second.scan("user event"))
    assert len(world.alarms) == 2
    # Each fallback alarm: one activated, one triggered_fallback; no retriggered.
    assert world.kinds() == sorted(["activated", "triggered_fallback"] * 2)
    assert world.astdb == {}


async def test_an_entry_adopted_before_is_not_raised_again_after_its_alarm_ended() -> None:
    # Adopted, then the delete was lost (AMI dropped): the alarm was deactivated since.
    # The next scan must not raise it again: never after stop.
    world = World()
    raised(world)
    fallback, alarms, ami = adopter(world)
    ami.connected = False
    await fallback.scan("start-up")  # cannot even read astdb
    ami.connected = True
    original = ami.db_delete

    async def lose_the_delete(family: str, key: str) -> None:
        raise AmiConnectionLost("dropped")

    ami.db_delete = lose_the_delete  # type: ignore[method-assign]
    assert await fallback.scan("periodic") == []  # activated and recorded, not deleted
    assert ID in world.astdb
    world.alarms.clear()  # deactivated: its key is free again
    ami.db_delete = original  # type: ignore[method-assign]
    [adoption] = await fallback.scan("AMI reconnection")
    assert adoption.outcome == "already adopted"
    assert len(alarms.calls) == 1
    assert world.alarms == {}
    assert world.astdb == {}
    assert world.kinds() == ["activated", "triggered_fallback"]


async def test_an_orphaned_page_count_is_deleted_and_foreign_keys_are_left() -> None:
    world = World(astdb={f"{ID}/pages": "4", "not ours": "1"})
    fallback, alarms, _ = adopter(world)
    assert await fallback.scan("periodic") == []
    assert alarms.calls == []
    assert world.astdb == {"not ours": "1"}


async def test_the_user_event_wakes_the_adopter_at_once() -> None:
    world = World()
    fallback, _, ami = adopter(world)
    task = asyncio.create_task(fallback.run())
    try:
        await ami.scanned.wait()  # the start-up scan has read astdb (empty)
        raised(world)
        ami.callbacks[0](Message([("Event", "UserEvent"), ("UserEvent", "FastAGIPanicFallback")]))
        async with asyncio.timeout(2):  # the scan interval is 60 s
            await ami.deleted.wait()
        event = next(e for e in world.history.values() if e.kind is EventKind.TRIGGERED_FALLBACK)
        assert event.details["adopted_via"] == "user event"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ami.callbacks == []
    assert ami.hooks == []


async def test_an_ami_reconnection_makes_the_adopter_scan_again() -> None:
    # Asterisk restarted (or the network came back) while the dialplan raised an alarm:
    # its UserEvent went to nobody, the scan after the reconnection finds the entry.
    world = World()
    fallback, _, ami = adopter(world)
    task = asyncio.create_task(fallback.run())
    try:
        await ami.scanned.wait()
        raised(world)
        [hook] = ami.hooks
        await hook()
        async with asyncio.timeout(2):  # the scan interval is 60 s
            await ami.deleted.wait()
        event = next(e for e in world.history.values() if e.kind is EventKind.TRIGGERED_FALLBACK)
        assert event.details["adopted_via"] == "AMI reconnection"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
