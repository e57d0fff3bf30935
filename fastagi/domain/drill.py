"""Drills: the real alarm chain run on purpose, recorded as a drill (pure: no I/O).

Theory of operation. A drill is an alarm whose row is flagged (sql/007_drills.sql) and
carries a :class:`Drill`: how many page cycles it runs before it stops by itself, which
devices it pages (a test list, or the department's paging group), whether it calls the
emergency destinations. Everything else is the alarm machinery: the paging loop,
leadership, the gate before each page, deactivation, the lamps, the history. What
differs is said here: its key (``drill:department:<id>``: a real alarm of the department
is never a re-trigger of its drill, and a drill never hides one), its end, its report
(:func:`build_report`, from the ``page_cycle`` events' per-device outcomes) and the
schedule a server runs drills by (:func:`next_slot`).

A drill ends in one of three ways, told apart by who deactivated it: by itself after its
cycles (``by`` = :data:`COMPLETED_BY`), yielding to a real alarm of its department
(``by`` = ``"alarm <id>"``, reason :data:`YIELD_REASON`), or stopped by a person.
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol
from uuid import UUID, uuid4, uuid5

from fastagi.domain.events import EventKind, HistoryEvent

MIN_CYCLES, MAX_CYCLES = 1, 20
#: ``deactivated_by`` of a drill that stopped by itself after its cycles.
COMPLETED_BY = "drill"
#: ``deactivation_reason`` of a drill that made way for a real alarm.
YIELD_REASON = "a real alarm of the department"
#: ``drill_requested_by`` of a drill the schedule started.
SCHEDULE = "schedule"

# What one device did in one page (a page_cycle event's ``devices``).
ANSWERED = "answered"
NO_ANSWER = "no answer"
BUSY = "busy"
NOT_DIALLED = "not dialled"

# Deterministic event ids: whoever records these, each is written once.
_EVENT_NAMESPACE = UUID("0b4f7c52-8a1e-4d1b-9e57-6f2f4c1d2a90")


@dataclass(frozen=True)
class Drill:
    """What makes an alarm a drill."""

    cycles: int  # page cycles before it stops by itself
    devices: tuple[str, ...] = ()  # a test list; empty: the department's paging group
    emergency: bool = False  # call the emergency destinations too
    requested_by: str = SCHEDULE  # 'cli:<user>', 'extension <ext>' or SCHEDULE
    scheduled_for: datetime | None = None  # the schedule's slot

    def __post_init__(self) -> None:
        if not MIN_CYCLES <= self.cycles <= MAX_CYCLES:
            raise ValueError(f"a drill runs {MIN_CYCLES} to {MAX_CYCLES} cycles, not {self.cycles}")

    def complete(self, cycles_paged: int) -> bool:
        """Whether a drill that paged ``cycles_paged`` cycles is done paging."""
        return cycles_paged >= self.cycles


def started_event(
    department: str,
    extension: str,
    drill: Drill,
    details: Mapping[str, Any],
    *,
    event_id: UUID | None = None,
) -> HistoryEvent:
    """The ``drill_started`` event (its alarm id is filled in when the row is written)."""
    return HistoryEvent(
        EventKind.DRILL_STARTED,
        None,
        extension or None,
        department,
        {
            "requested_by": drill.requested_by,
            "cycles": drill.cycles,
            "devices": list(drill.devices),
            "emergency": drill.emergency,
            **(
                {"scheduled_for": drill.scheduled_for.isoformat()}
                if drill.scheduled_for is not None
                else {}
            ),
            **details,
        },
        event_id=event_id or uuid4(),
    )


def drill_key(department_id: int) -> str:
    """The drill's alarm key: one active drill per department, beside any real alarm."""
    return f"drill:department:{department_id}"


def is_drill_key(key: str) -> bool:
    return key.startswith("drill:")


def report_event_id(alarm_id: int) -> UUID:
    """The ``drill_report`` event's id: written once, whoever writes it."""
    return uuid5(_EVENT_NAMESPACE, f"drill_report/{alarm_id}")


def slot_event_id(slot: datetime, department_id: int) -> UUID:
    """The id of the event a scheduled slot leaves when its drill cannot start: every
    server runs the schedule, one event is kept."""
    return uuid5(_EVENT_NAMESPACE, f"drill_slot/{slot.astimezone(UTC).isoformat()}/{department_id}")


def device_of(channel: str) -> str:
    """The device of a channel name: ``PJSIP/201-0000001a`` -> ``PJSIP/201``."""
    device, separator, sequence = channel.rpartition("-")
    return device if separator and device and sequence else channel


# ---- the report ------------------------------------------------------------------------


class Ending(enum.StrEnum):
    COMPLETED = "completed"  # stopped by itself after its cycles
    YIELDED = "yielded"  # made way for a real alarm
    STOPPED = "stopped"  # deactivated by a person
    RUNNING = "running"  # not ended (yet)


def ending(deactivated_by: str | None, reason: str | None) -> Ending:
    if deactivated_by is None:
        return Ending.RUNNING
    if deactivated_by == COMPLETED_BY:
        return Ending.COMPLETED
    if deactivated_by.startswith("alarm ") and reason == YIELD_REASON:
        return Ending.YIELDED
    return Ending.STOPPED


@dataclass(frozen=True)
class DeviceTally:
    """One device over the drill's pages."""

    device: str
    paged: int  # pages that were to reach it
    answered: int
    outcomes: tuple[str, ...]  # per page: ANSWERED, NO_ANSWER, BUSY, NOT_DIALLED

    @property
    def missed(self) -> bool:
        return self.answered < self.paged


@dataclass(frozen=True)
class DrillReport:
    alarm_id: int
    department: str
    cycles_planned: int
    cycles_paged: int
    devices: tuple[DeviceTally, ...]
    ending: Ending
    ended_by: str | None = None
    reason: str | None = None
    # Pages whose outcome nobody knows (the leader died during them).
    unknown_pages: int = 0
    emergency: bool = False
    emergency_calls: int = 0
    acknowledged_by: str | None = None

    @property
    def not_answered(self) -> tuple[str, ...]:
        """Every device that missed at least one page, in the order they were paged."""
        return tuple(tally.device for tally in self.devices if tally.missed)

    @property
    def ok(self) -> bool:
        """Every page reached every device (and the emergency call was acknowledged)."""
        return (
            self.cycles_paged > 0
            and not self.not_answered
            and self.unknown_pages == 0
            and (not self.emergency or self.acknowledged_by is not None)
        )

    def details(self) -> dict[str, Any]:
        """The ``drill_report`` event's details (read back by :meth:`from_details`)."""
        return {
            "cycles_planned": self.cycles_planned,
            "cycles_paged": self.cycles_paged,
            "ending": str(self.ending),
            "ended_by": self.ended_by,
            "reason": self.reason,
            "devices": [
                {
                    "device": tally.device,
                    "paged": tally.paged,
                    "answered": tally.answered,
                    "outcomes": list(tally.outcomes),
                }
                for tally in self.devices
            ],
            "not_answered": list(self.not_answered),
            "unknown_pages": self.unknown_pages,
            "emergency": self.emergency,
            "emergency_calls": self.emergency_calls,
            "acknowledged_by": self.acknowledged_by,
            "ok": self.ok,
        }

    @classmethod
    def from_details(cls, alarm_id: int, department: str, data: Mapping[str, Any]) -> DrillReport:
        return cls(
            alarm_id=alarm_id,
            department=department,
            cycles_planned=int(data["cycles_planned"]),
            cycles_paged=int(data["cycles_paged"]),
            devices=tuple(
                DeviceTally(
                    str(item["device"]),
                    int(item["paged"]),
                    int(item["answered"]),
                    tuple(str(o) for o in item.get("outcomes", ())),
                )
                for item in data.get("devices", ())
            ),
            ending=Ending(data.get("ending", Ending.RUNNING)),
            ended_by=data.get("ended_by"),
            reason=data.get("reason"),
            unknown_pages=int(data.get("unknown_pages", 0)),
            emergency=bool(data.get("emergency", False)),
            emergency_calls=int(data.get("emergency_calls", 0)),
            acknowledged_by=data.get("acknowledged_by"),
        )


class _DrillAlarm(Protocol):
    """The part of fastagi.domain.alarm.Alarm a report is about."""

    @property
    def id(self) -> int: ...
    @property
    def department_name(self) -> str: ...
    @property
    def drill(self) -> Drill | None: ...
    @property
    def deactivated_by(self) -> str | None: ...
    @property
    def deactivation_reason(self) -> str | None: ...


class _TimelineEvent(Protocol):
    """The part of fastagi.store.history.StoredEvent a report reads."""

    @property
    def alarm_id(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


def report_of(alarm: _DrillAlarm, timeline: Iterable[_TimelineEvent]) -> DrillReport:
    """The report of a drill alarm from its history's timeline, in time order (the
    events of other alarms it holds are left out)."""
    if alarm.drill is None:
        raise ValueError(f"alarm {alarm.id} is not a drill")
    return build_report(
        alarm.id,
        alarm.department_name,
        alarm.drill,
        [(event.kind, event.details) for event in timeline if event.alarm_id == alarm.id],
        deactivated_by=alarm.deactivated_by,
        reason=alarm.deactivation_reason,
    )


def build_report(
    alarm_id: int,
    department: str,
    drill: Drill,
    events: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    deactivated_by: str | None,
    reason: str | None,
) -> DrillReport:
    """The drill's report from its events, as ``(kind, details)`` in time order.

    Each ``page_cycle`` event names what every device did in that page (``devices``:
    device -> outcome, fastagi/alarms/paging.py); one whose outcome is unknown (its
    leader died during it) counts as paged but reaches no device. ``emergency_call``
    and ``acknowledged`` events give the emergency call's part.
    """
    outcomes: dict[str, list[str]] = {}
    cycles: set[int] = set()
    unknown = 0
    calls = 0
    acknowledged_by: str | None = None
    for kind, details in events:
        if kind == "page_cycle":
            number = details.get("cycle")
            if not isinstance(number, int) or number in cycles:
                continue  # each page once, whatever the history holds
            cycles.add(number)
            devices = details.get("devices")
            if not isinstance(devices, Mapping):
                unknown += 1
                continue
            for device, outcome in devices.items():
                outcomes.setdefault(str(device), []).append(str(outcome))
        elif kind == "emergency_call":
            calls += 1
        elif kind == "acknowledged" and acknowledged_by is None:
            by = details.get("by")
            acknowledged_by = str(by) if by is not None else None
    tallies = tuple(
        DeviceTally(device, len(seen), seen.count(ANSWERED), tuple(seen))
        for device, seen in outcomes.items()
    )
    return DrillReport(
        alarm_id=alarm_id,
        department=department,
        cycles_planned=drill.cycles,
        cycles_paged=len(cycles),
        devices=tallies,
        ending=ending(deactivated_by, reason),
        ended_by=deactivated_by,
        reason=reason,
        unknown_pages=unknown,
        emergency=drill.emergency,
        emergency_calls=calls,
        acknowledged_by=acknowledged_by,
    )


def report_lines(report: DrillReport) -> list[str]:
    """The report for people: what the CLI prints."""
    lines = [
        f"drill {report.alarm_id} of {report.department}: {report.ending}"
        + (f" ({report.reason})" if report.reason and report.ending != Ending.COMPLETED else ""),
        f"pages: {report.cycles_paged} of {report.cycles_planned}"
        + (f", {report.unknown_pages} with unknown outcome" if report.unknown_pages else ""),
    ]
    for tally in report.devices:
        mark = "MISSED" if tally.missed else "ok"
        lines.append(
            f"  {tally.device}: answered {tally.answered} of {tally.paged} ({mark}:"
            f" {', '.join(tally.outcomes)})"
        )
    if not report.devices:
        lines.append("  no device was paged")
    if report.emergency:
        acknowledged = report.acknowledged_by or "nobody"
        lines.append(
            f"emergency call: {report.emergency_calls} call(s), acknowledged by {acknowledged}"
        )
    if report.not_answered:
        lines.append("did not answer: " + ", ".join(report.not_answered))
    else:
        lines.append("every device answered" if report.devices else "no device answered")
    return lines


# ---- the schedule ----------------------------------------------------------------------


class Frequency(enum.StrEnum):
    OFF = "off"
    DAILY = "daily"
    WEEKLY = "weekly"  # day: ISO weekday, 1 = Monday .. 7 = Sunday
    MONTHLY = "monthly"  # day: 1 .. 28, so that every month has it


@dataclass(frozen=True)
class Schedule:
    frequency: Frequency
    at: time  # local wall-clock time, in ``zone``
    day: int = 1
    zone: tzinfo = UTC

    def __post_init__(self) -> None:
        if self.frequency is Frequency.WEEKLY and not 1 <= self.day <= 7:
            raise ValueError(f"a weekly drill's day is 1 (Monday) to 7 (Sunday), not {self.day}")
        if self.frequency is Frequency.MONTHLY and not 1 <= self.day <= 28:
            raise ValueError(f"a monthly drill's day is 1 to 28, not {self.day}")


def parse_time(text: str) -> time:
    """``HH:MM`` or ``HH:MM:SS`` (24 h)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"not a time like 03:00 or 03:00:30: {text!r}")
    hour, minute, second = (int(p) for p in (*parts, "00")[:3])
    return time(hour, minute, second)  # raises ValueError when out of range


def next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` (timezone-aware), in UTC; None when off.

    A slot is a local wall-clock time in the schedule's zone: on the day a clock change
    skips it, it comes as if the change had not happened yet (zoneinfo's ``fold=0``),
    and when a change repeats it, at its first occurrence.
    """
    if schedule.frequency is Frequency.OFF:
        return None
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    local_day = after.astimezone(schedule.zone).date()
    for candidate_day in _days_from(schedule, local_day):
        candidate = datetime.combine(candidate_day, schedule.at, tzinfo=schedule.zone)
        if candidate > after:
            return candidate.astimezone(UTC)
    raise AssertionError("unreachable: the days run on")  # pragma: no cover


def _days_from(schedule: Schedule, start: date) -> Iterable[date]:
    """The schedule's days from ``start``'s period on, in order (endless)."""
    if schedule.frequency is Frequency.DAILY:
        day = start
        while True:
            yield day
            day += timedelta(days=1)
    elif schedule.frequency is Frequency.WEEKLY:
        day = start + timedelta(days=(schedule.day - start.isoweekday()) % 7)
        while True:
            yield day
            day += timedelta(days=7)
    else:
        year, month = start.year, start.month
        while True:
            yield date(year, month, min(schedule.day, calendar.monthrange(year, month)[1]))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
