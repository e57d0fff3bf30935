"""Drills, the pure parts: the schedule's slots, the report from page_cycle events, what
each device did in a page, the [TEST] mark of notifications, and the [drill] settings."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from fastagi.alarms.paging import _Page
from fastagi.ami import Message
from fastagi.config import DrillSettings
from fastagi.domain.drill import (
    ANSWERED,
    BUSY,
    COMPLETED_BY,
    NO_ANSWER,
    NOT_DIALLED,
    YIELD_REASON,
    Drill,
    DrillReport,
    Ending,
    Frequency,
    Schedule,
    build_report,
    device_of,
    next_slot,
    parse_time,
    report_event_id,
    report_lines,
    slot_event_id,
)
from fastagi.notify import Notification
from fastagi.notify.message import body, sms_text, subject
from fastagi.store.changes import AlarmChange

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def berlin(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


# ---- the schedule -----------------------------------------------------------------------


def test_daily_slot_is_today_until_it_passes_then_tomorrow() -> None:
    rule = Schedule(Frequency.DAILY, time(3, 0), zone=BERLIN)
    assert next_slot(rule, berlin(2026, 5, 4, 2, 59)) == berlin(2026, 5, 4, 3, 0)
    # Strictly after: the slot itself is past once it is now (it was just run).
    assert next_slot(rule, berlin(2026, 5, 4, 3, 0)) == berlin(2026, 5, 5, 3, 0)
    assert next_slot(rule, berlin(2026, 5, 4, 23, 0)) == berlin(2026, 5, 5, 3, 0)
    # In UTC, whatever zone "after" is in.
    slot = next_slot(rule, datetime(2026, 5, 4, 0, 0, tzinfo=UTC))
    assert slot == datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
    assert slot is not None
    assert slot.tzinfo is UTC


def test_weekly_slot_on_its_weekday() -> None:
    # 2026-05-04 is a Monday; day 3 is Wednesday.
    rule = Schedule(Frequency.WEEKLY, time(22, 30), day=3, zone=BERLIN)
    assert next_slot(rule, berlin(2026, 5, 4, 12, 0)) == berlin(2026, 5, 6, 22, 30)
    assert next_slot(rule, berlin(2026, 5, 6, 22, 30)) == berlin(2026, 5, 13, 22, 30)
    sunday = Schedule(Frequency.WEEKLY, time(1, 0), day=7, zone=BERLIN)
    assert next_slot(sunday, berlin(2026, 5, 10, 0, 59)) == berlin(2026, 5, 10, 1, 0)


def test_monthly_slot_on_its_day_and_over_the_year_end() -> None:
    rule = Schedule(Frequency.MONTHLY, time(3, 0), day=28, zone=BERLIN)
    assert next_slot(rule, berlin(2026, 2, 1)) == berlin(2026, 2, 28, 3, 0)
    assert next_slot(rule, berlin(2026, 12, 28, 3, 0, 1)) == berlin(2027, 1, 28, 3, 0)
    first = Schedule(Frequency.MONTHLY, time(3, 0), day=1, zone=BERLIN)
    assert next_slot(first, berlin(2026, 5, 1, 3, 0)) == berlin(2026, 6, 1, 3, 0)


def test_slots_follow_the_local_clock_across_daylight_saving() -> None:
    rule = Schedule(Frequency.DAILY, time(3, 0), zone=BERLIN)
    before = next_slot(rule, berlin(2026, 3, 27, 12, 0))  # 03:00 CET on the 28th
    after = next_slot(rule, berlin(2026, 3, 28, 12, 0))  # 03:00 CEST on the 29th
    assert before is not None
    assert after is not None
    # 03:00 local both days; the clocks went forward in between: 23 h apart.
    assert after - before == timedelta(hours=23)
    # A time the change skips (02:30 on 2026-03-29) still comes, once, that day.
    skipped = Schedule(Frequency.DAILY, time(2, 30), zone=BERLIN)
    slot = next_slot(skipped, berlin(2026, 3, 29, 0, 0))
    assert slot is not None
    assert slot.date() == datetime(2026, 3, 29).date()


def test_off_has_no_slot_and_bad_rules_are_refused() -> None:
    assert next_slot(Schedule(Frequency.OFF, time(3, 0)), datetime.now(UTC)) is None
    with pytest.raises(ValueError, match="weekly"):
        Schedule(Frequency.WEEKLY, time(3, 0), day=8)
    with pytest.raises(ValueError, match="monthly"):
        Schedule(Frequency.MONTHLY, time(3, 0), day=31)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot(Schedule(Frequency.DAILY, time(3, 0)), datetime(2026, 1, 1))
    assert parse_time("03:00") == time(3, 0)
    assert parse_time("23:59:30") == time(23, 59, 30)
    for bad in ("3:00", "24:00", "03:60", "03", "03:00:00:00", "ab:cd"):
        with pytest.raises(ValueError, match=r"not a time|must be in"):
            parse_time(bad)


def test_drill_settings_validate_the_schedule_and_the_pin() -> None:
    rule = DrillSettings(
        schedule="weekly", day=2, time="04:15:30", timezone="Europe/Berlin"
    ).schedule_rule()
    assert rule == Schedule(Frequency.WEEKLY, time(4, 15, 30), day=2, zone=BERLIN)
    for bad, message in (
        ({"schedule": "weekly", "day": 8}, "weekly"),
        ({"schedule": "monthly", "day": 29}, "less than or equal to 28"),
        ({"schedule": "hourly"}, "schedule"),
        ({"time": "3am"}, "not a time"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"pin": "12a4"}, "4 to 12 digits"),
        ({"pin": "123"}, "4 to 12 digits"),
        ({"announcement": "Test of {extension}"}, "may use only"),
        ({"caller_name": "TEST\r\nX: y"}, "one line"),
        ({"devices": ["PJSIP/201&PJSIP/202"]}, "not an Asterisk device"),
        ({"cycles": 0}, "cycles"),
    ):
        with pytest.raises(ValidationError, match=message):
            DrillSettings(**bad)


# ---- the report -------------------------------------------------------------------------


Events = list[tuple[str, Mapping[str, Any]]]


def page(cycle: int, **devices: str) -> tuple[str, dict[str, Any]]:
    return "page_cycle", {
        "cycle": cycle,
        "devices": {f"PJSIP/{k[1:]}": v for k, v in devices.items()},
    }


def test_report_names_every_device_that_did_not_answer() -> None:
    drill = Drill(cycles=2)
    events: Events = [
        ("drill_started", {}),
        page(1, d271=ANSWERED, d272=BUSY, d273=NOT_DIALLED),
        ("lamp_changed", {}),
        page(2, d271=ANSWERED, d272=ANSWERED, d273=NOT_DIALLED),
        page(2, d271=NO_ANSWER, d272=NO_ANSWER, d273=NO_ANSWER),  # the same page again
        ("deactivated", {"by": COMPLETED_BY}),
    ]
    report = build_report(
        9, "ER", drill, events, deactivated_by=COMPLETED_BY, reason="2 cycle(s) paged"
    )
    assert report.cycles_paged == 2
    assert [(t.device, t.paged, t.answered) for t in report.devices] == [
        ("PJSIP/271", 2, 2),
        ("PJSIP/272", 2, 1),
        ("PJSIP/273", 2, 0),
    ]
    assert report.not_answered == ("PJSIP/272", "PJSIP/273")
    assert report.ending is Ending.COMPLETED
    assert not report.ok
    lines = report_lines(report)
    assert lines[-1] == "did not answer: PJSIP/272, PJSIP/273"
    assert "  PJSIP/272: answered 1 of 2 (MISSED: busy, answered)" in lines
    # The event's details read back the same.
    assert DrillReport.from_details(9, "ER", report.details()) == report


def test_report_of_a_drill_that_reached_everyone_or_yielded() -> None:
    drill = Drill(cycles=1, emergency=True)
    events: Events = [
        page(1, d271=ANSWERED),
        ("emergency_call", {"outcome": "busy"}),
        ("emergency_call", {"outcome": "acknowledged"}),
        ("acknowledged", {"by": "PJSIP/150"}),
    ]
    report = build_report(3, "ER", drill, events, deactivated_by=COMPLETED_BY, reason=None)
    assert report.ok
    assert (report.emergency_calls, report.acknowledged_by) == (2, "PJSIP/150")
    assert report_lines(report)[-1] == "every device answered"
    not_acknowledged = build_report(3, "ER", drill, events[:2], deactivated_by="drill", reason="")
    assert not not_acknowledged.ok  # the emergency call is part of the drill
    yielded = build_report(
        3, "ER", Drill(cycles=3), events[:1], deactivated_by="alarm 12", reason=YIELD_REASON
    )
    assert yielded.ending is Ending.YIELDED
    assert report_lines(yielded)[0] == f"drill 3 of ER: yielded ({YIELD_REASON})"
    unknown = build_report(
        3,
        "ER",
        Drill(cycles=1),
        [("page_cycle", {"cycle": 1, "dialled": None, "error": "leader lost"})],
        deactivated_by="cli:alice",
        reason="stop",
    )
    assert (unknown.cycles_paged, unknown.unknown_pages, unknown.ending) == (1, 1, Ending.STOPPED)
    assert not unknown.ok


def test_event_ids_are_fixed_per_drill_and_per_slot() -> None:
    assert report_event_id(5) == report_event_id(5) != report_event_id(6)
    slot = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
    assert slot_event_id(slot, 1) == slot_event_id(slot.astimezone(BERLIN), 1)
    assert slot_event_id(slot, 1) != slot_event_id(slot, 2)
    with pytest.raises(ValueError, match="1 to 20 cycles"):
        Drill(cycles=21)


# ---- what each device did in a page -------------------------------------------------------


def event(kind: str, **fields: str) -> Message:
    return Message([("Event", kind), *fields.items()])


def test_device_outcomes_from_the_page_events() -> None:
    page = _Page("panic-1-1-abc", devices=4)
    legs = {"A": "PJSIP/271-00000001", "B": "PJSIP/272-00000002", "C": "PJSIP/273-00000003"}
    for uniqueid, name in legs.items():
        page.feed(event("Newchannel", Linkedid=page.channel_id, Uniqueid=uniqueid, Channel=name))
    page.feed(
        event(
            "Newstate", Linkedid=page.channel_id, Uniqueid="A", Channel=legs["A"], ChannelState="6"
        )
    )
    page.feed(
        event("Hangup", Linkedid=page.channel_id, Uniqueid="B", Channel=legs["B"], Cause="17")
    )
    page.feed(
        event("Hangup", Linkedid=page.channel_id, Uniqueid="C", Channel=legs["C"], Cause="19")
    )
    outcomes = page.device_outcomes(["PJSIP/271", "pjsip/272", "PJSIP/273", "PJSIP/274"])
    assert outcomes == {
        "PJSIP/271": ANSWERED,
        "pjsip/272": BUSY,
        "PJSIP/273": NO_ANSWER,
        "PJSIP/274": NOT_DIALLED,
    }
    assert device_of("PJSIP/my-phone-0000002a") == "PJSIP/my-phone"
    assert device_of("PJSIP/201") == "PJSIP/201"


# ---- notifications and notices ------------------------------------------------------


def test_a_drill_notification_is_marked_test_everywhere() -> None:
    at = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
    note = Notification("activated", 7, "ER", "", at, at, drill=True)
    assert subject(note) == "[TEST] PANIC ALARM: ER (alarm #7)"
    assert sms_text(note, UTC).startswith("[TEST] PANIC ALARM: ER #7 ")
    text = body(note, UTC)
    assert text.startswith("[TEST] PANIC ALARM: ER.\n")
    assert "Drill:        this is a test of the panic alarm, not an alarm\n" in text
    assert "Extension:    -\n" in text
    real = Notification("activated", 8, "ER", "101", at, at)
    assert "[TEST]" not in subject(real) + body(real, UTC) + sms_text(real, UTC)


def test_a_drill_started_notification_parses() -> None:
    assert AlarmChange.parse("+12") == AlarmChange(12, started=True)
    assert AlarmChange(12, started=True).payload() == "+12"
    assert AlarmChange.parse("12 host:1") == AlarmChange(12, "host:1")
    assert AlarmChange.parse("+x") is None
