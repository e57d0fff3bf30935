"""The ``acknowledge`` route against a scripted Asterisk: the exact commands it sends and
what it asks of the emergency caller.  The flow runs in the real AgiServer; the scripted
Asterisk is its TCP client on loopback."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fastagi.alarms.emergency import EmergencySettings, emergency_announcement
from fastagi.config import DrillSettings
from fastagi.flows.acknowledge import AcknowledgeFlow
from fastagi.store.emergency import Acknowledgement, AcknowledgeResult, AlarmSummary
from fastagi.tts import Prompt, TtsError
from tests.scripted_asterisk import ScriptedAsterisk as _Scripted

pytestmark = pytest.mark.timeout(10)

SETTINGS = EmergencySettings(announcement_repeats=3, digit_timeout_ms=2000)
ACTIVATED = datetime(2025, 3, 1, 13, 5, tzinfo=UTC)
OK = "200 result=1\n"
PLAYED = "200 result=0\n"
SILENCE = "200 result= (timeout)\n"
STREAMED = "200 result=0 endpos=8000\n"
HANGUP = "HANGUP\n200 result=-1\n"


def digits(value: str) -> str:
    return f"200 result={value}\n"


def environment(args: tuple[str, ...]) -> bytes:
    lines = {
        "agi_network": "yes",
        "agi_network_script": "acknowledge",
        "agi_channel": "PJSIP/241-00000003",
        "agi_uniqueid": "emergency-7-abc",
        "agi_callerid": "101",
        "agi_context": "fastagi-panic-emergency",
        "agi_extension": "s",
        **{f"agi_arg_{n}": value for n, value in enumerate(args, start=1)},
    }
    return "".join(f"{k}: {v}\n" for k, v in lines.items()).encode() + b"\n"


class ScriptedAsterisk(_Scripted):
    """Asterisk for an emergency leg whose AGI() arguments are ``args``."""

    def __init__(self, *replies: str, args: tuple[str, ...]) -> None:
        super().__init__(*replies, greeting=environment(args))


class FakeTts:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.names: dict[str, str] = {}

    def name(self, text: str) -> str:
        return self.names.setdefault(text, f"/tts/{len(self.names) + 1}")

    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        voice: str | None = None,
    ) -> Prompt:
        if self.fail:
            raise TtsError("espeak-ng is not installed")
        name = self.name(text)
        return Prompt(Path(name + ".sln"), name)


@dataclass
class FakeCaller:
    state: str = "active"
    known: bool = True
    acknowledgements: list[dict[str, object]] = field(default_factory=list)
    described: list[int] = field(default_factory=list)
    drill: bool = False

    async def describe(self, alarm_id: int) -> AlarmSummary | None:
        self.described.append(alarm_id)
        if not self.known:
            return None
        return AlarmSummary(
            alarm_id, "Ward 3", "201", self.state, ACTIVATED, None, drill=self.drill
        )

    async def acknowledge(
        self, alarm_id, *, by, attempt=None, channel=None, details=None
    ) -> AcknowledgeResult:
        self.acknowledgements.append(
            {"alarm_id": alarm_id, "by": by, "attempt": attempt, "channel": channel, **details}
        )
        ack = Acknowledgement(alarm_id, ACTIVATED, by, attempt, channel)
        return AcknowledgeResult(ack, first=len(self.acknowledgements) == 1)


async def run(asterisk: ScriptedAsterisk, caller: FakeCaller, tts: FakeTts) -> None:
    await asterisk.run(AcknowledgeFlow(caller, tts, SETTINGS))


ARGS = ("7", "emergency-7-abc", "PJSIP/241")


def announcement(tts: FakeTts) -> str:
    text = emergency_announcement(SETTINGS, "Ward 3", "201", ACTIVATED)
    return f"GET DATA {tts.name(text)} 2000 1"


async def test_key_1_acknowledges_with_the_destination_and_thanks():
    caller, tts = FakeCaller(), FakeTts()
    asterisk = ScriptedAsterisk(SILENCE, digits("1"), PLAYED, OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands == [
        announcement(tts),
        announcement(tts),
        f"EXEC Playback {tts.name(SETTINGS.acknowledged_text)}",
        "SET VARIABLE FASTAGI_STATUS ACKNOWLEDGED",
    ]
    assert caller.acknowledgements == [
        {
            "alarm_id": 7,
            "by": "PJSIP/241",
            "attempt": "emergency-7-abc",
            "channel": "PJSIP/241-00000003",
            "uniqueid": "emergency-7-abc",
            "callerid": "101",
            "announcements": 2,
        }
    ]


async def test_no_key_after_every_repetition_is_noack():
    caller, tts = FakeCaller(), FakeTts()
    asterisk = ScriptedAsterisk(SILENCE, digits("5"), SILENCE, OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands == [*[announcement(tts)] * 3, "SET VARIABLE FASTAGI_STATUS NOACK"]
    assert caller.acknowledgements == []


@pytest.mark.parametrize("args", [(), ("7x",), ("7; DROP TABLE alarms",), ("7", "bad attempt")])
async def test_invalid_arguments_end_the_call_without_a_query(args):
    caller, tts = FakeCaller(), FakeTts()
    asterisk = ScriptedAsterisk(OK, args=args)
    await run(asterisk, caller, tts)
    assert asterisk.commands == ["SET VARIABLE FASTAGI_STATUS INVALID"]
    assert caller.described == []


async def test_unknown_alarm():
    caller, tts = FakeCaller(known=False), FakeTts()
    asterisk = ScriptedAsterisk(OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands == ["SET VARIABLE FASTAGI_STATUS NOALARM"]


async def test_an_alarm_deactivated_meanwhile_is_said_so():
    caller, tts = FakeCaller(state="deactivated"), FakeTts()
    asterisk = ScriptedAsterisk(PLAYED, OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands[1] == "SET VARIABLE FASTAGI_STATUS ENDED"
    assert caller.acknowledgements == []


async def test_hang_up_during_the_announcement():
    caller, tts = FakeCaller(), FakeTts()
    asterisk = ScriptedAsterisk(HANGUP, OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands == [announcement(tts), "SET VARIABLE FASTAGI_STATUS HANGUP"]
    assert caller.acknowledgements == []


async def test_tts_failure_plays_built_in_sounds_and_a_key_during_them_counts():
    caller, tts = FakeCaller(), FakeTts(fail=True)
    asterisk = ScriptedAsterisk(STREAMED, digits("49"), PLAYED, OK, args=ARGS)
    await run(asterisk, caller, tts)
    assert asterisk.commands[:2] == [
        "STREAM FILE ascending-2tone 0123456789*#",
        ("STREAM FILE vm-Urgent 0123456789*#"),
    ]
    assert asterisk.commands[-2:] == [
        "EXEC Playback auth-thankyou",
        ("SET VARIABLE FASTAGI_STATUS ACKNOWLEDGED"),
    ]
    assert caller.acknowledgements[0]["by"] == "PJSIP/241"


async def test_a_drill_says_it_is_a_test():
    caller, tts = FakeCaller(drill=True), FakeTts()
    drill = DrillSettings(emergency_announcement="Test call for {department} at {time}. Press 1.")
    asterisk = ScriptedAsterisk(digits("1"), PLAYED, OK, args=ARGS)
    await asterisk.run(AcknowledgeFlow(caller, tts, SETTINGS, drill_settings=drill))
    text = emergency_announcement(
        SETTINGS.model_copy(update={"announcement": drill.emergency_announcement}),
        "Ward 3",
        "201",
        ACTIVATED,
    )
    assert text.startswith("Test call for Ward 3 at ")
    assert asterisk.commands[0] == f"GET DATA {tts.name(text)} 2000 1"
    assert len(caller.acknowledgements) == 1
    # Without text-to-speech: a beep and "T. E. S. T.", never "urgent".
    failing = FakeTts(fail=True)
    asterisk = ScriptedAsterisk(STREAMED, digits("1"), PLAYED, OK, args=ARGS)
    await asterisk.run(AcknowledgeFlow(FakeCaller(drill=True), failing, SETTINGS))
    assert asterisk.commands[0] == "STREAM FILE beep 0123456789*#"
    assert not any("vm-Urgent" in command for command in asterisk.commands)
