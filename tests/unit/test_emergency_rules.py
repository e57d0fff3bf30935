"""Pure rules of the emergency call: the order of attempts, outcomes, caller ids, texts,
settings, and the acknowledge route's arguments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from fastagi.alarms.emergency import (
    Attempt,
    EmergencySettings,
    Outcome,
    attempt_plan,
    caller_id_for,
    classify,
    emergency_announcement,
)
from fastagi.ami import Message, OriginateResult
from fastagi.flows.acknowledge import parse_arguments


def result(reason: int, *, success: bool = False, uniqueid: str | None = "x") -> OriginateResult:
    return OriginateResult(
        action_id="a-1",
        success=success,
        reason=reason,
        channel="PJSIP/150",
        uniqueid=uniqueid,
        event=Message([("Event", "OriginateResponse")]),
    )


def test_plan_walks_each_destination_once_per_round_in_order():
    plan = attempt_plan(["PJSIP/150", "Local/600@from-internal"], 2, "primary")
    assert plan == [
        Attempt("primary", 1, 1, "PJSIP/150"),
        Attempt("primary", 1, 2, "Local/600@from-internal"),
        Attempt("primary", 2, 1, "PJSIP/150"),
        Attempt("primary", 2, 2, "Local/600@from-internal"),
    ]
    assert attempt_plan([], 3, "escalation") == []


@pytest.mark.parametrize(
    ("reason", "cause", "outcome"),
    [
        (4, None, Outcome.NOT_ACKNOWLEDGED),  # answered: the key decides, not the reason
        (3, None, Outcome.NO_ANSWER),
        (5, None, Outcome.BUSY),
        (8, None, Outcome.CONGESTION),
        (0, 17, Outcome.BUSY),  # Asterisk 22's answer to a 486: Reason 0, Cause 17
        (0, 19, Outcome.NO_ANSWER),
        (0, 34, Outcome.CONGESTION),
        (1, 21, Outcome.REJECTED),
        (1, None, Outcome.REJECTED),
        (0, None, Outcome.FAILED),
        (0, 16, Outcome.FAILED),  # normal clearing before an answer says nothing more
        (42, None, Outcome.FAILED),  # a reason Asterisk may add one day
    ],
)
def test_classify(reason, cause, outcome):
    assert classify(result(reason, success=reason == 4), cause) is outcome


def test_only_an_acknowledgement_counts_as_reached():
    assert [o for o in Outcome if o.reached] == [Outcome.ACKNOWLEDGED]


def test_caller_id_of_the_extension_and_its_emergency_cid():
    settings = EmergencySettings()
    assert caller_id_for(settings, "Ward 3", "201") == '"PANIC Ward 3" <201>'
    assert caller_id_for(settings, "Ward 3", "201", "+4930123") == '"PANIC Ward 3" <+4930123>'
    assert caller_id_for(settings, None, "201").startswith('"PANIC ')


def test_caller_id_cannot_be_broken_by_a_department_name_or_a_caller_id():
    settings = EmergencySettings()
    assert caller_id_for(settings, 'Ward "3" <x>', "201") == '"PANIC Ward 3 x" <201>'
    # An unknown caller's text is no number: the name alone is sent.
    assert caller_id_for(settings, "Ward 3", "anonymous") == '"PANIC Ward 3"'
    assert caller_id_for(settings, "Ward 3", "201", "55501;x") == '"PANIC Ward 3" <201>'
    assert caller_id_for(settings, "Ward 3", "<>;") == '"PANIC Ward 3"'


def test_fixed_caller_id():
    settings = EmergencySettings(caller_id_mode="fixed", caller_id_fixed='"Alarm" <5550100>')
    assert caller_id_for(settings, "Ward 3", "201", "999") == '"Alarm" <5550100>'


def test_announcement_names_department_extension_and_local_time():
    activated = datetime(2025, 3, 1, 13, 5, tzinfo=UTC)
    text = emergency_announcement(EmergencySettings(), "Ward 3", "201", activated)
    local = activated.astimezone().strftime("%H:%M")
    assert text == (
        f"Emergency. Panic alarm in department Ward 3, extension 201, at {local}. "
        "Press 1 to acknowledge."
    )


@pytest.mark.parametrize(
    "update",
    [
        {"destinations": ["150"]},
        {"destinations": ["PJSIP/150&PJSIP/151"]},
        {"destinations": ["PJSIP/150,1"]},
        {"escalation_destinations": ["Local/1 2@ctx"]},
        {"caller_id_mode": "fixed"},
        {"announcement": "Alarm {room}"},
        {"caller_id_name": "line\nbreak"},
        {"emergency_cid_key": "{device}/emergency_cid"},
        {"rounds": 0},
    ],
)
def test_settings_refuse(update):
    with pytest.raises(ValidationError):
        EmergencySettings(**update)


def test_settings_enabled_only_with_destinations():
    assert not EmergencySettings().enabled
    assert EmergencySettings(destinations=["Local/5551234@outbound-trunk"]).enabled
    assert EmergencySettings(escalation_destinations=["PJSIP/150"]).enabled


@pytest.mark.parametrize(
    ("query", "args", "parsed"),
    [
        ({}, ("12", "emergency-12-ab", "PJSIP/241"), (12, "emergency-12-ab", "PJSIP/241")),
        ({"alarm": "7", "dest": "PJSIP/150"}, (), (7, None, "PJSIP/150")),
        ({}, ("12",), (12, None, "")),
        ({}, (" 12 ",), (12, None, "")),
        ({}, ("12", "", "Local/5551234@trunk\n"), (12, None, "Local/5551234@trunk")),
    ],
)
def test_arguments(query, args, parsed):
    assert parse_arguments(query, args) == parsed


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("",),
        ("12a",),
        ("-1",),
        ("1e3",),
        ("١٢",),  # Arabic-Indic digits are digits to str.isdigit(), not to us
        ("1" * 19,),
        ("12", "a b"),
        ("12", "x;DROP"),
    ],
)
def test_arguments_refused(args):
    assert parse_arguments({}, args) is None
