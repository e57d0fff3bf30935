"""BLF lamps: Custom:PANIC and Custom:PANIC_<department> seen by a subscribing desk phone."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from fastagi.alarms.lamps import LampChange, Lamps
from fastagi.ami import AmiClient
from fastagi.config import AlarmSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.e2e.test_alarm_service import Harness, department

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@dataclass(frozen=True)
class FakeAlarm:
    department_id: int | None


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    client = AmiClient(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, SecretStr(sandbox.ami_secret)
    )
    async with client:
        yield client


def dialog_states(result: sipp.SippResult) -> list[str]:
    return [
        match.group(1)
        for notify in result.received("NOTIFY")
        for match in [re.search(r"<state>(\w+)</state>", notify.text)]
        if match
    ]


async def watch(sandbox: Sandbox, workdir: Path, service: str, action) -> list[str]:
    """Subscribe to ``service``, run ``action`` once the first NOTIFY has come, and return
    the dialog states of the first two NOTIFYs (before and after)."""
    subscription = asyncio.create_task(
        sipp.subscribe_dialog(sandbox, workdir, service=service, ext=150, notifies=2)
    )
    await asyncio.sleep(1.0)  # SUBSCRIBE, 200 and the initial NOTIFY on loopback
    await action()
    result = await subscription
    result.check()
    return dialog_states(result)[:2]


def reading(alarms: list[FakeAlarm]) -> Callable[[], Awaitable[list[FakeAlarm]]]:
    """A read of the active alarms that returns ``alarms``."""

    async def read() -> list[FakeAlarm]:
        return alarms

    return read


def _append_to(events: list[HistoryEvent]) -> Callable[[HistoryEvent], Awaitable[None]]:
    async def record(event: HistoryEvent) -> None:
        events.append(event)

    return record


async def test_main_and_department_lamps_follow_alarms(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    recorded: list[HistoryEvent] = []
    lamps = Lamps(ami, AlarmSettings(), record=_append_to(recorded), instance_id="lamp-test")
    try:
        assert await lamps.update(reading([]), [7]) == [
            LampChange("Custom:PANIC", "NOT_INUSE", None),
            LampChange("Custom:PANIC_7", "NOT_INUSE", None),
        ]
        assert await lamps.update(reading([])) == []  # nothing changed, nothing sent

        async def start() -> None:
            changes = await lamps.update(reading([FakeAlarm(7)]))
            assert {c.device for c in changes} == {"Custom:PANIC", "Custom:PANIC_7"}

        assert await watch(sandbox, tmp_path / "on", "*555", start) == [
            "terminated",
            "confirmed",
        ]
        assert await ami.get_device_state("Custom:PANIC") == "BUSY"
        # What a re-trigger asks before it reads and applies (AlarmService._activate).
        assert lamps.lit_for(FakeAlarm(7))
        assert not lamps.lit_for(FakeAlarm(8))  # its department's lamp was never set

        async def stop_department() -> None:
            assert await lamps.update(reading([FakeAlarm(None)])) == [
                LampChange("Custom:PANIC_7", "NOT_INUSE", "BUSY")
            ]

        # The per-department key (*555<id>, a pattern hint) goes out, the main one stays.
        assert await watch(sandbox, tmp_path / "dept", "*5557", stop_department) == [
            "confirmed",
            "terminated",
        ]
        assert await ami.get_device_state("Custom:PANIC") == "BUSY"
        assert not lamps.lit_for(FakeAlarm(7))
        assert lamps.lit_for(FakeAlarm(None))  # an alarm of no department: the main lamp

        async def stop_all() -> None:
            assert await lamps.update(reading([])) == [
                LampChange("Custom:PANIC", "NOT_INUSE", "BUSY")
            ]

        assert await watch(sandbox, tmp_path / "off", "*555", stop_all) == [
            "confirmed",
            "terminated",
        ]
        # After an AMI reconnection everything is set again, changed or not.
        assert {c.device for c in await lamps.reapply()} == {"Custom:PANIC", "Custom:PANIC_7"}
        # Each change was recorded by the lamps themselves, once, without a cause.
        assert {e.kind for e in recorded} == {EventKind.LAMP_CHANGED}
        assert [(e.details["device"], e.details["state"]) for e in recorded] == [
            ("Custom:PANIC", "NOT_INUSE"),
            ("Custom:PANIC_7", "NOT_INUSE"),
            ("Custom:PANIC", "BUSY"),
            ("Custom:PANIC_7", "BUSY"),
            ("Custom:PANIC_7", "NOT_INUSE"),
            ("Custom:PANIC", "NOT_INUSE"),
            ("Custom:PANIC", "NOT_INUSE"),
            ("Custom:PANIC_7", "NOT_INUSE"),
        ]
        assert {e.alarm_id for e in recorded} == {None}
    finally:
        lamps.close()


@dataclass(frozen=True)
class FakeCause:
    id: int
    department_id: int | None
    extension: str = "201"
    department_name: str = "Ward"


async def test_concurrent_updates_share_reads_and_light_every_lamp(ami: AmiClient) -> None:
    # 30 activations at once, each committed before it asks for the lamps (as
    # AlarmService.activate does): a few reads serve them all, and every lamp is lit,
    # each change recorded once, with the alarm that caused it.
    recorded: list[HistoryEvent] = []
    lamps = Lamps(ami, AlarmSettings(), record=_append_to(recorded), instance_id="lamp-test")
    committed: list[FakeCause] = []
    reads = 0

    async def read_active() -> list[FakeCause]:
        nonlocal reads
        reads += 1
        snapshot = list(committed)
        await asyncio.sleep(0)  # a query's round trip: others commit meanwhile
        return snapshot

    async def activate(alarm: FakeCause) -> None:
        committed.append(alarm)
        await lamps.update(read_active, causes=[alarm])

    alarms = [FakeCause(9100 + n, 9100 + n) for n in range(30)]
    try:
        await asyncio.gather(*(activate(alarm) for alarm in alarms))
        assert reads <= 3
        states = await asyncio.gather(
            *(ami.get_device_state(f"Custom:PANIC_{a.department_id}") for a in alarms)
        )
        assert set(states) == {"BUSY"}
        assert sorted(
            (e.details["device"], e.alarm_id)
            for e in recorded
            if e.details["device"] != "Custom:PANIC"
        ) == sorted((f"Custom:PANIC_{a.department_id}", a.id) for a in alarms)
    finally:
        lamps.close()


async def test_an_older_read_is_never_applied_after_a_newer_one(ami: AmiClient) -> None:
    lamps = Lamps(ami, AlarmSettings(), record=_append_to([]), instance_id="lamp-test")
    committed = [FakeAlarm(9200)]
    slow_read_taken = asyncio.Event()
    release_slow_read = asyncio.Event()

    async def slow_read() -> list[FakeAlarm]:
        snapshot = list(committed)  # before 9201 commits
        slow_read_taken.set()
        await release_slow_read.wait()
        return snapshot

    async def fast_read() -> list[FakeAlarm]:
        return list(committed)

    try:
        first = asyncio.create_task(lamps.update(slow_read))
        await slow_read_taken.wait()
        committed.append(FakeAlarm(9201))
        second = asyncio.create_task(lamps.update(fast_read))
        # A chance for the second update to run ahead (it must wait for the first); a
        # slow machine can only make this test pass wrongly, never fail wrongly.
        await asyncio.sleep(0.2)
        release_slow_read.set()
        await asyncio.gather(first, second)
        # The later read, which has 9201, is what Asterisk shows last.
        assert await ami.get_device_state("Custom:PANIC_9201") == "BUSY"
        assert lamps.applied["Custom:PANIC_9201"] == "BUSY"
    finally:
        lamps.close()


async def test_ringing_lamp_state_is_early(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    lamps = Lamps(
        ami, AlarmSettings(lamp_state="RINGING"), record=_append_to([]), instance_id="lamp-test"
    )
    try:
        await lamps.update(reading([]))

        async def start() -> None:
            await lamps.update(reading([FakeAlarm(None)]))

        assert await watch(sandbox, tmp_path, "*555", start) == ["terminated", "early"]
    finally:
        await lamps.update(reading([]))
        lamps.close()


async def lamp_events(store: Stores) -> list[tuple[str, str]]:
    """(device, state) of every lamp_changed in the history, oldest first."""
    return [
        (e.details["device"], e.details["state"])
        for e in await store.history.history(
            dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
        )
        if e.kind == "lamp_changed"
    ]


def last_state(events: list[tuple[str, str]], device: str) -> str | None:
    return next((state for lamp, state in reversed(events) if lamp == device), None)


async def test_service_lights_the_lamp_while_an_alarm_runs(
    sandbox: Sandbox, database_dsn: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        harness = Harness(sandbox, database_dsn, tmp_path, stack)
        store, _ = await harness.store()
        await department(store, "Ward L", "107", [228], interval=5)
        await harness.phone(228)
        service = await harness.service("lamps")
        ward = await service.lookup("107")
        assert ward is not None
        alarm_ids: list[int] = []

        async def activate() -> None:
            alarm_ids.append((await service.activate("107", ward, uniqueid="l")).alarm.id)

        assert await watch(sandbox, tmp_path / "start", f"*555{ward.id}", activate) == [
            "terminated",
            "confirmed",
        ]

        async def deactivate() -> None:
            assert await service.deactivate(alarm_ids[0], by="cli", reason="done")

        assert await watch(sandbox, tmp_path / "stop", "*555", deactivate) == [
            "confirmed",
            "terminated",
        ]
        lamps = ("Custom:PANIC", f"Custom:PANIC_{ward.id}")
        # A change is recorded once Asterisk has answered the Setvar, which may be after
        # the phone saw the lamp go out: wait for both records.
        async with asyncio.timeout(15):
            while [last_state(await lamp_events(store), lamp) for lamp in lamps] != [  # noqa: ASYNC110
                "NOT_INUSE",
                "NOT_INUSE",
            ]:
                await asyncio.sleep(0.05)
        events = await lamp_events(store)
        assert ("Custom:PANIC", "BUSY") in events
        assert (f"Custom:PANIC_{ward.id}", "BUSY") in events
        assert events[-1][1] == "NOT_INUSE"
