"""fastagi/domain/replay.py: the secrets a replay file leaves out, and how timelines and
directories are compared."""

from __future__ import annotations

import pytest

from fastagi import cli
from fastagi.config import AlarmSettings
from fastagi.domain.replay import (
    TimelineEntry,
    compare_directories,
    compare_settings,
    compare_timelines,
    entries,
    listed_entries,
    scrub,
)
from fastagi_dev.replay import ReplayResult, replayed_alarm_settings


def entry(kind: str, at: float, **devices: str) -> TimelineEntry:
    details = {"devices": {f"PJSIP/{k[1:]}": v for k, v in devices.items()}} if devices else {}
    return TimelineEntry(kind, at, details)


def test_scrub_drops_every_key_naming_a_secret_at_any_depth() -> None:
    details = {
        "by": "cli:ada",
        "pin": "1234",
        "nested": {"PIN_attempt": 2, "secret": "x", "ok": [{"password": "p", "keep": 1}]},
        "api_token": "t",
    }
    assert scrub(details) == {"by": "cli:ada", "nested": {"ok": [{"keep": 1}]}}


def test_timelines_match_within_the_tolerance_at_the_replays_speed() -> None:
    original = [entry("activated", 0), entry("page_cycle", 20, p201="answered")]
    replayed = [entry("activated", 0), entry("page_cycle", 2.4, p201="answered")]
    assert compare_timelines(original, replayed, speed=10, tolerance=0.5) == []
    assert compare_timelines(original, replayed, speed=10, tolerance=0.3) == [
        "page_cycle #1: at +2.40 s, expected +2.00 s (±0.3 s)"
    ]


def test_a_missing_event_and_another_outcome_are_named() -> None:
    original = [entry("page_cycle", 2, p201="answered"), entry("page_cycle", 7, p201="busy")]
    replayed = [entry("page_cycle", 2, p201="no answer")]
    assert compare_timelines(original, replayed) == [
        "page_cycle: 2 then, 1 now",
        "page_cycle #1: devices {'PJSIP/201': 'answered'} then, {'PJSIP/201': 'no answer'} now",
    ]


def test_directories_are_compared_key_by_key() -> None:
    then = {
        "department": {"name": "ER", "paging_group": "A", "devices": ["PJSIP/201"]},
        "policy": {"no_answer_policy": "activate"},
    }
    now = {
        "department": {"name": "ER", "paging_group": "B", "devices": ["PJSIP/201"]},
        "policy": {"no_answer_policy": "cancel"},
    }
    assert compare_directories(then, then) == []
    assert compare_directories(then, now) == [
        "paging group: 'A' then, 'B' now",
        "policy no answer policy: 'activate' then, 'cancel' now",
    ]


# The site's [alarm] settings, as the export writes them (a laptop has the defaults).
SITE = AlarmSettings(
    lead_in=0.2, page_timeout=7, announcement="Panic {extension}.", hangup_on_deactivate=False
).replayed()


def test_the_sites_alarm_settings_replace_the_laptops_defaults() -> None:
    assert set(SITE) == set(AlarmSettings.REPLAYED)
    used, notes = replayed_alarm_settings(AlarmSettings(), SITE)
    assert (used.lead_in, used.page_timeout, used.announcement) == (
        0.2,
        7,
        "Panic {extension}.",
    )
    assert used.hangup_on_deactivate is False
    assert used.page_context == AlarmSettings().page_context  # the machine's dialplan
    assert notes == []
    assert compare_settings(SITE, used.replayed()) == []


def test_settings_the_replay_had_to_change_are_named() -> None:
    # An override (a what-if replay), a value this version refuses and a key it does not
    # know: each pages with something else than the original, and the diff says what.
    recorded = {**SITE, "page_timeout": 999, "ring_twice": True}
    used, notes = replayed_alarm_settings(AlarmSettings(), recorded, {"lead_in": 0.5})
    assert (used.lead_in, used.page_timeout) == (0.5, 20)
    assert notes == [
        "alarm.page_timeout = 999 is refused here (Input should be less than or equal to"
        " 300): kept 20"
    ]
    assert compare_settings(recorded, used.replayed()) == [
        "setting alarm.lead_in: 0.2 then, 0.5 now",
        "setting alarm.page_timeout: 999 then, 20 now",
        "setting alarm.ring_twice: True then, not a setting here",
    ]


def test_a_file_without_settings_is_replayed_with_the_machines_and_says_so() -> None:
    used, notes = replayed_alarm_settings(AlarmSettings(lead_in=0.3), None)
    assert used.lead_in == 0.3
    assert notes == [
        "the file holds no [alarm] settings (exported before sql/012): this machine's were used"
    ]
    assert compare_settings(None, used.replayed()) == []


def test_fastagi_replay_says_where_replays_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "12"]) == 2
    err = capsys.readouterr().err
    assert "python -m fastagi_dev replay" in err
    assert "--format replay" in err


def test_emergency_calls_and_notifications_are_listed_not_compared() -> None:
    def event(kind: str, at: float, **details: object) -> dict[str, object]:
        return {"kind": kind, "at": at, "details": details}

    document = {
        "events": [
            event("activated", 0.0),
            event("notification_sent", 0.4, event="activated", channel="email", outcome="sent"),
            event("emergency_call", 1.2, list="primary", destination="PJSIP/204"),
            event("page_cycle", 2.0, devices={"PJSIP/201": "answered"}),
            event("acknowledged", 3.5, by="PJSIP/204"),
            event("lamp_changed", 3.6),  # context: neither compared nor listed
            event("deactivated", 9.0),
        ]
    }
    original = entries(document)
    assert [e.kind for e in original] == ["activated", "page_cycle", "deactivated"]
    listed = listed_entries(document)
    replayed = [entry("activated", 0), entry("page_cycle", 2.1), entry("deactivated", 9.1)]
    result = ReplayResult(original, replayed, alarm_id=7, listed=listed)
    assert result.matches  # what the sandbox cannot re-enact is no difference ...
    assert result.report().splitlines() == [  # ... but a reader sees all of it
        "ORIGINAL                                 REPLAYED",
        "   +0.00 s  activated                       +0.00 s  activated",
        "   +0.40 s  notification_sent*",
        "   +1.20 s  emergency_call*",
        "   +2.00 s  page_cycle                      +2.10 s  page_cycle",
        "   +3.50 s  acknowledged*",
        "   +9.00 s  deactivated                     +9.10 s  deactivated",
        "(* not re-enacted by a replay: listed only)",
        "",
        "no differences",
        "not re-enacted (listed only):",
        "  notification_sent at +0.40 s (event activated, channel email, outcome sent)",
        "  emergency_call at +1.20 s (list primary, destination PJSIP/204)",
        "  acknowledged at +3.50 s (by PJSIP/204)",
    ]


def replay_file(page_ended: float, page_began: float | None) -> dict[str, object]:
    """A replay file's alarm and events: activated, one page that began at ``page_began``
    (no ``started_at`` when None, as a file of an older version) and ended at
    ``page_ended``, deactivated at +9 s."""
    activated = "2026-11-29T10:00:00+00:00"
    details: dict[str, object] = {"cycle": 1, "devices": {"PJSIP/201": "answered"}}
    if page_began is not None:
        details["started_at"] = f"2026-11-29T10:00:0{page_began:.3f}+00:00"
    return {
        "alarm": {"activated_at": activated},
        "events": [
            {"kind": "activated", "at": 0.0, "details": {}},
            {"kind": "page_cycle", "at": page_ended, "details": details},
            {"kind": "deactivated", "at": 9.0, "details": {}},
        ],
    }


def test_a_page_cycle_is_compared_by_when_it_began_not_how_long_it_lasted() -> None:
    # A loaded sandbox stretched the original's page by 2 s; it began on time in both.
    original = entries(replay_file(page_ended=4.02, page_began=0.25))
    replayed = entries(replay_file(page_ended=1.88, page_began=0.31))
    assert [(e.kind, e.at) for e in original] == [
        ("activated", 0.0),
        ("page_cycle", 0.25),
        ("deactivated", 9.0),
    ]
    assert compare_timelines(original, replayed) == []
    # A page that began late is a difference.
    late = entries(replay_file(page_ended=4.02, page_began=2.25))
    assert compare_timelines(late, replayed) == [
        "page_cycle #1: at +0.31 s, expected +2.25 s (±1.5 s)"
    ]


def test_a_file_without_page_starts_compares_page_ends() -> None:
    original = entries(replay_file(page_ended=4.02, page_began=None))
    assert [e.at for e in original if e.kind == "page_cycle"] == [4.02]
    replayed = entries(replay_file(page_ended=1.88, page_began=None))
    assert compare_timelines(original, replayed) == [
        "page_cycle #1: at +1.88 s, expected +4.02 s (±1.5 s)"
    ]
