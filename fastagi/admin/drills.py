"""Starting a drill from outside a server (``fastagi drill``): the drill's row, its
``drill_started`` event and the ``NOTIFY`` that makes a running server lead it at once
(fastagi/store/alarms.py); then waiting for its end and its report.

The CLI runs no paging of its own: a drill is the servers' alarm machinery run on
purpose, so a drill that no server pages shows exactly that (no server is running).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from fastagi.domain.alarm import Alarm
from fastagi.domain.drill import (
    MAX_CYCLES,
    MIN_CYCLES,
    Drill,
    DrillReport,
    report_event_id,
    report_of,
    started_event,
)
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.alarms import DrillStartOutcome

#: The reason of a drill the CLI stopped because no server paged it.
NO_SERVER = "no server paged it"
# How often the wait reads the drill's row besides the notification (a lost one).
_POLL_SECONDS = 1.0
_DEVICE_FORBIDDEN = "&,|() \t"


async def start_drill(
    stores: Stores,
    department_name: str,
    *,
    cycles: int,
    devices: Sequence[str] = (),
    emergency: bool = False,
    by: str,
) -> Alarm:
    """Start a drill of the department; a running server leads it at once. Refused
    (StoreError) for an unknown department, bad cycles or devices, a department with no
    paging devices and no ``devices`` given, a real alarm of the department being active,
    or a drill of it running."""
    if not MIN_CYCLES <= cycles <= MAX_CYCLES:
        raise StoreError(f"cycles must be between {MIN_CYCLES} and {MAX_CYCLES}, not {cycles}")
    for device in devices:
        tech, _, resource = device.partition("/")
        if not (tech and resource) or any(char in device for char in _DEVICE_FORBIDDEN):
            raise StoreError(f"not an Asterisk device like PJSIP/201: '{device}'")
    directory = await stores.directory.load_directory()
    wanted = department_name.strip().lower()
    department = next((d for d in directory.departments if d.name.lower() == wanted), None)
    if department is None:
        raise StoreError(f"unknown department '{department_name.strip()}'")
    if not devices and not department.devices:
        raise StoreError(
            f"department '{department.name}' has no paging devices: give --devices or"
            " add devices to its paging group"
        )
    drill = Drill(cycles=cycles, devices=tuple(devices), emergency=emergency, requested_by=by)
    event = started_event(department.name, "", drill, {"source": "cli"})
    started = await stores.alarms.start_drill(
        department.id, department.name, "", drill, event, notify=True
    )
    if started.outcome is not DrillStartOutcome.STARTED or started.alarm is None:
        which = f" (alarm {started.alarm.id})" if started.alarm is not None else ""
        raise StoreError(f"no drill of '{department.name}': {started.outcome.value}{which}")
    return started.alarm


@dataclass(frozen=True)
class DrillEnd:
    alarm: Alarm  # as it ended (or as it was when the wait gave up)
    report: DrillReport | None  # None: it did not end
    recorded: bool  # the report is the drill_report event a server recorded


async def wait_for_drill(
    stores: Stores, alarm_id: int, *, start_timeout: float, report_timeout: float, by: str
) -> DrillEnd:
    """Wait until the drill ends and return its report.

    No page within ``start_timeout`` seconds (no server leads it): the drill is
    deactivated here (reason "no server paged it") and reported as it stands. After the
    end, the report is the ``drill_report`` its leader records once its loop has ended;
    when none comes within ``report_timeout`` (the leader died), it is built from the
    history and recorded here (its id is fixed: once, whoever writes it first).
    """
    ended = asyncio.Event()
    closer = await stores.alarms.listen_changes(
        lambda changed: ended.set() if changed == alarm_id else None
    )
    try:
        alarm = await _wait_end(stores, alarm_id, ended, start_timeout, by)
    finally:
        with contextlib.suppress(Exception):
            await closer()
    if alarm.is_active or alarm.drill is None:
        return DrillEnd(alarm, None, recorded=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + report_timeout
    event_id = report_event_id(alarm_id)
    while True:
        stored = await stores.history.find_event(event_id)
        if stored is not None:
            report = DrillReport.from_details(alarm_id, alarm.department_name, stored.details)
            return DrillEnd(alarm, report, recorded=True)
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.2)  # no notification is sent for a history event
    report = report_of(alarm, await stores.history.timeline(alarm_id))
    await stores.history.append_event(
        HistoryEvent(
            EventKind.DRILL_REPORT,
            alarm.id,
            None,
            alarm.department_name,
            {**report.details(), "instance": by},
            event_id=event_id,
        )
    )
    return DrillEnd(alarm, report, recorded=False)


async def _wait_end(
    stores: Stores, alarm_id: int, ended: asyncio.Event, start_timeout: float, by: str
) -> Alarm:
    loop = asyncio.get_running_loop()
    started_by = loop.time() + start_timeout
    while True:
        ended.clear()  # before the read: a notification after it wakes the wait below
        alarm = await stores.alarms.get_alarm(alarm_id)
        if alarm is None:
            raise StoreError(f"unknown alarm {alarm_id}")
        if not alarm.is_active:
            return alarm
        if alarm.cycles == 0 and loop.time() >= started_by:
            event = HistoryEvent(
                EventKind.DEACTIVATED,
                alarm.id,
                None,
                alarm.department_name,
                {"by": by, "reason": NO_SERVER, "source": "cli"},
            )
            done = await stores.alarms.deactivate(alarm.id, by, NO_SERVER, event)
            return done or alarm
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_POLL_SECONDS):
                await ended.wait()
