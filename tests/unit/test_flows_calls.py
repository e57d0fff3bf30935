"""The panic and deactivation flows against a scripted Asterisk and in-memory fakes.

Each test scripts Asterisk's replies in order and asserts the exact commands the flow
sent, the history it recorded and what it asked of the alarm service.  The flow runs in
the real AgiServer; the scripted Asterisk is its TCP client on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fastagi.agi.session import AgiSession, DigitsResult
from fastagi.alarms.outage import DatabaseDown
from fastagi.config import FlowSettings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import UNKNOWN_DEPARTMENT, Department
from fastagi.domain.events import HistoryEvent
from fastagi.domain.pins import hash_pin
from fastagi.flows import prompts
from fastagi.flows.common import pjsip_endpoint
from fastagi.flows.deactivate import DeactivateFlow
from fastagi.flows.panic import PanicFlow
from fastagi.tts import Prompt, TtsError
from tests.scripted_asterisk import Reply
from tests.scripted_asterisk import ScriptedAsterisk as _Scripted

pytestmark = pytest.mark.timeout(10)

UNIQUEID = "1732546012.7"
PIN = "4711"
PIN_HASH = hash_pin(PIN)
ER = Department(id=1, name="Emergency Room", paging_group_id=1, interval_seconds=None)
PHARMACY = Department(id=2, name="Pharmacy", paging_group_id=1, interval_seconds=None)

OK = "200 result=1\n"
PLAYED = "200 result=0\n"
UNSET = "200 result=0\n"
SILENCE = "200 result= (timeout)\n"
STREAMED = "200 result=0 endpos=8000\n"  # STREAM FILE played to the end, no key
HANGUP = "HANGUP\n200 result=-1\n"


def digits(value: str) -> str:
    return f"200 result={value}\n"


def variable(value: str) -> str:
    return f"200 result=1 ({value})\n"


TRUNK = "PJSIP/provider-0000002a"  # a call that came in on a trunk's endpoint


def environment(callerid: str, channel: str | None) -> bytes:
    if channel is None:  # a desk phone: its endpoint is named by its extension
        channel = f"PJSIP/{callerid if callerid.isdigit() else '101'}-00000001"
    lines = {
        "agi_network": "yes",
        "agi_network_script": "panic",
        "agi_request": "agi://127.0.0.1:4573/panic",
        "agi_channel": channel,
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": UNIQUEID,
        "agi_version": "22.0.0",
        "agi_callerid": callerid,
        "agi_calleridname": "Desk",
        "agi_context": "fastagi-panic-trigger",
        "agi_extension": "s",
        "agi_priority": "4",
    }
    return "".join(f"{key}: {value}\n" for key, value in lines.items()).encode() + b"\n"


class ScriptedAsterisk(_Scripted):
    """Asterisk for a call from ``callerid``, on ``channel`` (default: the desk phone
    of that extension)."""

    def __init__(self, *replies: Reply, callerid: str = "101", channel: str | None = None) -> None:
        super().__init__(*replies, greeting=environment(callerid, channel))


async def run(flow, asterisk: ScriptedAsterisk) -> None:
    await asterisk.run(flow)


# What a record carries that is no one's data: LogRecord's times and thread and process
# ids, and msg and args (getMessage() has them).  Those numbers hold any four digits now and
# then, as do the loopback ports of the call.
_RECORD_BOOKKEEPING = frozenset(
    {"created", "msecs", "relativeCreated", "thread", "process", "msg", "args"}
)


def logged_text(caplog: pytest.LogCaptureFixture, asterisk: ScriptedAsterisk) -> str:
    """Every message and every other attribute of every record: where a PIN would show."""
    text = " ".join(
        f"{record.getMessage()} "
        f"{ {k: v for k, v in vars(record).items() if k not in _RECORD_BOOKKEEPING} }"
        for record in caplog.records
    )
    for address in (asterisk.address, asterisk.server_address):
        text = text.replace(address, "127.0.0.1:<port>")
    return text


class FakeTts:
    """Renders every text to ``/tts/<n>`` (in order of first use), or fails them all."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.names: dict[str, str] = {}
        self.voices: dict[str, str | None] = {}  # the voice each text was rendered with

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
        self.voices[text] = voice
        return Prompt(Path(name + ".sln"), name)


@dataclass(frozen=True)
class FakeAlarm:
    id: int
    department_name: str
    extension: str
    is_drill: bool = False


@dataclass(frozen=True)
class FakeActivation:
    alarm: FakeAlarm
    created: bool


@dataclass
class FakeSettings:
    no_answer_policy: str = "cancel"
    confirmation_attempts: int = 3
    pin_attempts: int = 3
    lockout_seconds: int = 300
    confirmation_mode: str = "voice"
    default_language: str = "en"


@dataclass
class FakeService:
    departments: dict[str, Department] = field(default_factory=lambda: {"101": ER, "205": PHARMACY})
    alarms: list[FakeAlarm] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)
    activations: list[tuple[str, Department | None, str]] = field(default_factory=list)
    deactivations: list[tuple[int, str, str]] = field(default_factory=list)
    deactivating_calls: list[str | None] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    async def lookup(self, extension: str) -> Department | None:
        self.lookups.append(extension)
        return self.departments.get(extension)

    async def activate(
        self, extension: str, department: Department | None, *, uniqueid: str
    ) -> FakeActivation:
        self.activations.append((extension, department, uniqueid))
        name = department.name if department else UNKNOWN_DEPARTMENT
        alarm = FakeAlarm(len(self.alarms) + 1, name, extension)
        self.alarms.append(alarm)
        return FakeActivation(alarm, created=True)

    async def active_alarms(self) -> list[FakeAlarm]:
        return list(self.alarms)

    async def deactivate(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> bool:
        self.deactivations.append((alarm_id, by, reason))
        self.deactivating_calls.append(uniqueid)
        before = len(self.alarms)
        self.alarms = [alarm for alarm in self.alarms if alarm.id != alarm_id]
        return len(self.alarms) < before

    async def record(self, event: HistoryEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [str(event.kind) for event in self.events]


@dataclass
class FakeStore:
    settings: FakeSettings = field(default_factory=FakeSettings)
    pin_hashes: dict[str, str] = field(default_factory=lambda: {"101": PIN_HASH})
    locked: dict[str, datetime] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    cleared: list[str] = field(default_factory=list)
    broken: bool = False
    # Wrong PINs of every extension, as the shared history counts them.
    total_failures: int = 0
    global_until: datetime | None = None

    async def load_settings(self) -> FakeSettings:
        if self.broken:
            raise ConnectionRefusedError("PostgreSQL is down")
        return self.settings

    async def deactivator_pin_hash(self, extension: str) -> str | None:
        return self.pin_hashes.get(extension)

    async def lockout_until(self, extension: str) -> datetime | None:
        return self.locked.get(extension)

    async def record_pin_failure(
        self, extension: str, max_failures: int, lockout_seconds: int
    ) -> datetime | None:
        self.failures[extension] = self.failures.get(extension, 0) + 1
        self.total_failures += 1
        if self.failures[extension] < max_failures:
            return None
        self.failures[extension] = 0
        until = datetime.now(UTC) + timedelta(seconds=lockout_seconds)
        self.locked[extension] = until
        return until

    async def clear_pin_failures(self, extension: str) -> None:
        self.cleared.append(extension)
        self.failures.pop(extension, None)

    async def global_lockout_until(
        self, max_failures: int, window_seconds: float, lockout_seconds: float
    ) -> datetime | None:
        if self.global_until is None and 0 < max_failures <= self.total_failures:
            self.global_until = datetime.now(UTC) + timedelta(seconds=lockout_seconds)
        return self.global_until


def panic(service, store, tts, **settings) -> PanicFlow:
    return PanicFlow(
        service, store, record=service.record, tts=tts, settings=FlowSettings(**settings)
    )


def question(tts: FakeTts, label: str = "Emergency Room") -> str:
    return f"GET DATA {tts.name(prompts.panic_question(label))} 5000 1"


def playback(tts: FakeTts, text: str) -> str:
    return f"EXEC Playback {tts.name(text)}"


# ---- panic ---------------------------------------------------------------------------


async def test_confirm_activates_acknowledges_and_records_each_step():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        question(tts),
        "SET VARIABLE FASTAGI_STATUS CONFIRMED",
        playback(tts, prompts.PANIC_ACTIVATED),
    ]
    assert service.activations == [("101", ER, UNIQUEID)]
    assert service.kinds == ["triggered", "prompt_played", "confirmed"]
    triggered = service.events[0]
    assert (triggered.extension, triggered.department) == ("101", "Emergency Room")
    assert triggered.details["caller_source"] == "endpoint"
    assert service.events[1].details["tts"] is True
    # Every step names its call, which links it to the alarm's timeline.
    assert {(e.details["uniqueid"], e.details["channel"]) for e in service.events} == {
        (UNIQUEID, "PJSIP/101-00000001")
    }


async def test_ampuser_wins_over_the_caller_id():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(variable("205"), digits("1"), OK, PLAYED, callerid="101")
    await run(panic(service, store, tts), asterisk)

    assert service.lookups == ["205"]
    assert service.activations == [("205", PHARMACY, UNIQUEID)]
    assert asterisk.commands[1] == question(tts, "Pharmacy")
    assert service.events[0].details["caller_source"] == "AMPUSER"


async def test_hostile_caller_id_is_an_unknown_extension_and_reaches_no_command():
    hostile = 'x"1 ${SHELL(reboot)}\\ EXEC System'
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    # Caller ids count only from a trunk a site chose to trust.
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, PLAYED, callerid=hostile, channel=TRUNK)
    await run(panic(service, store, tts, untrusted_caller="callerid"), asterisk)

    assert service.lookups == []  # only plain extension numbers are looked up
    assert service.activations == [(hostile, None, UNIQUEID)]
    label = prompts.UNKNOWN_LABEL.format(extension=hostile)
    assert asterisk.commands[1] == question(tts, label)
    assert not any("SHELL" in command for command in asterisk.commands)
    assert service.events[0].department == UNKNOWN_DEPARTMENT


async def test_unknown_extension_is_announced_digit_by_digit_in_words():
    service, store, tts = FakeService(departments={}), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, PLAYED, callerid="150")
    await run(panic(service, store, tts), asterisk)

    # The catalogue's words for the digits: never "one hundred and fifty".
    assert prompts.panic_question("unknown department, extension one five zero") in tts.names
    assert service.activations == [("150", None, UNIQUEID)]


async def test_no_caller_id_at_all_still_raises_the_alarm():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, PLAYED, callerid="unknown", channel=TRUNK)
    await run(panic(service, store, tts, untrusted_caller="callerid"), asterisk)

    assert service.activations == [("unknown", None, UNIQUEID)]
    assert service.events[0].details["caller_source"] == "none"


async def test_a_trigger_from_a_trunk_is_refused_whatever_its_caller_id():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    # The far end of a trunk claims to be desk phone 101.
    asterisk = ScriptedAsterisk(UNSET, callerid="101", channel=TRUNK)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands == ["GET VARIABLE AMPUSER", "SET VARIABLE FASTAGI_STATUS REFUSED"]
    assert service.lookups == []
    assert service.activations == []
    (refused,) = service.events
    assert refused.kind == "trigger_refused"
    assert refused.details["reason"] == "untrusted caller"
    assert (refused.details["channel"], refused.details["callerid"]) == (TRUNK, "101")
    assert refused.details["caller_source"] == "callerid"


async def test_the_endpoint_wins_over_a_forged_caller_id():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(
        UNSET, digits("1"), OK, PLAYED, callerid="205", channel="PJSIP/101-00000001"
    )
    await run(panic(service, store, tts), asterisk)

    assert service.lookups == ["101"]
    assert service.activations == [("101", ER, UNIQUEID)]
    assert service.events[0].details["caller_source"] == "endpoint"


async def test_cancel_records_and_raises_no_alarm():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("2"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[2:] == [
        "SET VARIABLE FASTAGI_STATUS CANCELLED",
        playback(tts, prompts.PANIC_CANCELLED),
    ]
    assert service.activations == []
    assert service.kinds == ["triggered", "prompt_played", "cancelled"]


async def test_invalid_key_prompts_again_then_confirm():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("7"), digits("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[1] == asterisk.commands[2] == question(tts)
    assert service.kinds == ["triggered", "prompt_played", "prompt_played", "confirmed"]
    assert len(service.activations) == 1


@pytest.mark.parametrize(("policy", "activations"), [("cancel", 0), ("activate", 1)])
async def test_silence_applies_the_no_answer_policy(policy, activations):
    service, tts = FakeService(), FakeTts()
    store = FakeStore(FakeSettings(no_answer_policy=policy, confirmation_attempts=2))
    asterisk = ScriptedAsterisk(UNSET, SILENCE, SILENCE, OK)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        question(tts),
        question(tts),
        "SET VARIABLE FASTAGI_STATUS NOANSWER",
    ]
    assert len(service.activations) == activations
    assert service.kinds == ["triggered", "prompt_played", "prompt_played", "no_answer"]
    no_answer = service.events[-1]
    assert no_answer.details["policy"] == policy
    assert no_answer.details["reason"] == "silence"


async def test_too_many_invalid_keys_count_as_no_answer():
    service, tts = FakeService(), FakeTts()
    store = FakeStore(FakeSettings(no_answer_policy="activate", confirmation_attempts=5))
    asterisk = ScriptedAsterisk(UNSET, digits("3"), digits("#"), OK)
    await run(panic(service, store, tts, invalid_key_limit=2), asterisk)

    assert service.events[-1].details["reason"] == "invalid keys"
    assert len(service.activations) == 1


async def test_hang_up_before_answering_records_it_and_raises_no_alarm():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, HANGUP, OK)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS HANGUP"
    assert service.activations == []
    assert service.kinds == ["triggered", "prompt_played", "caller_hung_up"]


async def test_hang_up_during_the_acknowledgement_changes_nothing():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, HANGUP)
    await run(panic(service, store, tts), asterisk)

    assert len(service.activations) == 1
    assert service.kinds == ["triggered", "prompt_played", "confirmed"]
    assert "SET VARIABLE FASTAGI_STATUS CONFIRMED" in asterisk.commands


async def test_discreet_confirmation_plays_nothing():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK)
    await run(panic(service, store, tts, ack_on_confirm=False), asterisk)

    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS CONFIRMED"
    assert asterisk.unused == 0


async def test_tts_failure_falls_back_to_built_in_sounds():
    service, store, tts = FakeService(), FakeStore(), FakeTts(fail=True)
    asterisk = ScriptedAsterisk(UNSET, STREAMED, STREAMED, digits("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    # GET DATA plays one file only: the files before the last go by STREAM FILE.
    assert asterisk.commands[1:4] == [
        "STREAM FILE vm-Urgent 0123456789*#",
        "STREAM FILE if-correct-press 0123456789*#",
        "GET DATA digits/1 5000 1",
    ]
    assert asterisk.commands[5] == "EXEC Playback activated"
    assert service.events[1].details["tts"] is False
    assert len(service.activations) == 1


async def test_a_key_during_a_fallback_prompt_is_the_answer():
    service, store, tts = FakeService(), FakeStore(), FakeTts(fail=True)
    asterisk = ScriptedAsterisk(UNSET, STREAMED, digits(str(ord("2"))), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[2] == "STREAM FILE if-correct-press 0123456789*#"
    assert asterisk.commands[3] == "SET VARIABLE FASTAGI_STATUS CANCELLED"
    assert service.activations == []


class HeldTts(FakeTts):
    """Renders the panic question only once ``released`` is set (a cold render on a
    loaded machine); every other text at once."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        voice: str | None = None,
    ) -> Prompt:
        if text.startswith("Panic alarm for"):
            await self.released.wait()
        return await super().render(text, timeout=timeout, voice=voice)


LISTEN = f"WAIT FOR DIGIT {prompts.LISTEN_SLICE_MS}"
NO_KEY = "200 result=0\n"  # WAIT FOR DIGIT's slice ended without a key


def key(value: str) -> str:
    return f"200 result={ord(value)}\n"


async def test_1_pressed_while_the_question_renders_is_the_answer():
    service, store, tts = FakeService(), FakeStore(), HeldTts()
    asterisk = ScriptedAsterisk(UNSET, NO_KEY, key("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        LISTEN,
        LISTEN,
        "SET VARIABLE FASTAGI_STATUS CONFIRMED",
        playback(tts, prompts.PANIC_ACTIVATED),
    ]
    assert service.activations == [("101", ER, UNIQUEID)]
    # Recorded as any confirmation, without a question that was never played.
    assert service.kinds == ["triggered", "confirmed"]
    assert service.events[1].details["prompts"] == 0
    assert service.events[1].details["before_prompt"] is True


async def test_2_pressed_while_the_question_renders_cancels():
    service, store, tts = FakeService(), FakeStore(), HeldTts()
    asterisk = ScriptedAsterisk(UNSET, key("2"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[1:3] == [LISTEN, "SET VARIABLE FASTAGI_STATUS CANCELLED"]
    assert service.activations == []
    assert service.kinds == ["triggered", "cancelled"]
    assert service.events[1].details["before_prompt"] is True


async def test_another_key_before_the_question_is_ignored_and_the_question_asked():
    service, store, tts = FakeService(), FakeStore(), HeldTts()

    def rendered_meanwhile(command: str) -> str:
        tts.released.set()
        return NO_KEY

    asterisk = ScriptedAsterisk(UNSET, key("5"), rendered_meanwhile, digits("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[:4] == ["GET VARIABLE AMPUSER", LISTEN, LISTEN, question(tts)]
    assert service.kinds == ["triggered", "prompt_played", "confirmed"]
    assert "before_prompt" not in service.events[2].details
    assert len(service.activations) == 1


async def test_hang_up_while_the_question_renders_raises_no_alarm():
    service, store, tts = FakeService(), FakeStore(), HeldTts()
    asterisk = ScriptedAsterisk(UNSET, NO_KEY, HANGUP, OK)
    await run(panic(service, store, tts), asterisk)

    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS HANGUP"
    assert service.activations == []
    assert service.kinds == ["triggered", "caller_hung_up"]


async def test_digits_begun_during_a_lead_prompt_are_completed_without_one():
    asterisk = ScriptedAsterisk(digits(str(ord("4"))), digits("711"))
    files = prompts.PromptFiles(("first", "second"), rendered=False)
    results: list[DigitsResult] = []

    async def ask(session: AgiSession) -> None:
        results.append(await prompts.ask(session, files, timeout_ms=3000, max_digits=12))

    await run(ask, asterisk)
    (result,) = results

    assert result.digits == "4711"
    assert asterisk.commands == [
        "STREAM FILE first 0123456789*#",
        'GET DATA "" 3000 11',
    ]


async def test_send_text_puts_the_question_on_the_display_as_one_literal_variable():
    name = 'Ward "3"\nnorth, ${X}'
    department = Department(id=3, name=name, paging_group_id=None, interval_seconds=None)
    service, store, tts = FakeService(departments={"101": department}), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, OK, PLAYED, digits("1"), OK, PLAYED)
    await run(panic(service, store, tts, send_text=True), asterisk)

    assert asterisk.commands[1] == (
        'SET VARIABLE SENDTEXT_BODY "PANIC Ward \\"3\\" north, ${X}: 1 = confirm, 2 = cancel"'
    )
    assert asterisk.commands[2] == "EXEC SendText"
    assert len(service.activations) == 1


async def test_database_down_uses_the_default_policy_and_still_activates():
    service, tts = FakeService(), FakeTts()
    store = FakeStore(broken=True)
    asterisk = ScriptedAsterisk(UNSET, SILENCE, SILENCE, SILENCE, OK)
    await run(panic(service, store, tts), asterisk)

    # Defaults: three attempts, then activate.
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS NOANSWER"
    assert len(service.activations) == 1


async def test_a_failing_directory_still_raises_an_alarm_of_unknown_department():
    class NoDirectory(FakeService):
        async def lookup(self, extension):
            raise ConnectionRefusedError("PostgreSQL is down")

    service, store, tts = NoDirectory(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK, PLAYED)
    await run(panic(service, store, tts), asterisk)

    assert service.activations == [("101", None, UNIQUEID)]
    assert asterisk.commands[1] == question(tts, "unknown department, extension one zero one")


async def test_a_failing_activation_sets_error_and_propagates():
    class Broken(FakeService):
        async def activate(self, extension, department, *, uniqueid):
            raise RuntimeError("boom")

    service, store, tts = Broken(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("1"), OK)
    with pytest.raises(RuntimeError):
        await run(panic(service, store, tts), asterisk)
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS ERROR"
    assert service.kinds[-1] == "error"


# ---- deactivate ----------------------------------------------------------------------


def deactivate(service, store, tts, **settings) -> DeactivateFlow:
    return DeactivateFlow(
        service,
        store,
        store,
        record=service.record,
        tts=tts,
        settings=FlowSettings(**settings),
    )


def pin_prompt(tts: FakeTts, text: str = prompts.PIN_PROMPT) -> str:
    return f"GET DATA {tts.name(text)} 6000 12"


def with_alarms(*alarms: FakeAlarm) -> FakeService:
    return FakeService(alarms=list(alarms))


ER_ALARM = FakeAlarm(11, "Emergency Room", "101")
PHARMACY_ALARM = FakeAlarm(12, "Pharmacy", "205")
UNKNOWN_ALARM = FakeAlarm(13, UNKNOWN_DEPARTMENT, "150")


async def test_not_a_deactivator_is_refused():
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK, callerid="102")
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        playback(tts, prompts.NOT_AUTHORISED),
        "SET VARIABLE FASTAGI_STATUS REFUSED",
    ]
    assert service.kinds == ["deactivation_refused"]
    assert service.events[0].details["reason"] == "not authorised"
    assert service.deactivations == []


async def test_a_deactivation_from_a_trunk_is_refused_before_the_pin():
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    # 101 is a deactivator (FakeStore); the trunk's far end claims to be it.
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK, callerid="101", channel=TRUNK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        playback(tts, prompts.NOT_AUTHORISED),
        "SET VARIABLE FASTAGI_STATUS REFUSED",
    ]
    (refused,) = service.events
    assert refused.kind == "deactivation_refused"
    assert refused.details["reason"] == "untrusted caller"
    assert refused.details["channel"] == TRUNK
    assert service.deactivations == []


async def test_locked_out_extension_is_refused_before_the_pin():
    service, tts = with_alarms(ER_ALARM), FakeTts()
    store = FakeStore(locked={"101": datetime.now(UTC) + timedelta(minutes=5)})
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:] == [
        playback(tts, prompts.LOCKED_OUT),
        "SET VARIABLE FASTAGI_STATUS LOCKED",
    ]
    assert service.events[0].details["reason"] == "locked out"


async def test_global_lockout_refuses_every_deactivator_before_the_pin():
    service, tts = with_alarms(ER_ALARM), FakeTts()
    store = FakeStore(global_until=datetime.now(UTC) + timedelta(minutes=5))
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:] == [
        playback(tts, prompts.LOCKED_OUT),
        "SET VARIABLE FASTAGI_STATUS LOCKED",
    ]
    assert service.kinds == ["deactivation_refused"]
    assert service.events[0].details["reason"] == "global lockout"
    assert "locked_until" in service.events[0].details


async def test_wrong_pins_across_extensions_start_the_global_lockout(caplog):
    caplog.set_level(logging.DEBUG)
    service, tts = with_alarms(ER_ALARM), FakeTts()
    # Other extensions guessed twice already; the per-extension limit is far away.
    store = FakeStore(FakeSettings(pin_attempts=5), total_failures=2)
    asterisk = ScriptedAsterisk(UNSET, digits("9999"), PLAYED, OK)
    await run(deactivate(service, store, tts, global_pin_failures=3), asterisk)

    assert asterisk.commands[-2:] == [
        playback(tts, prompts.LOCKED_OUT),
        "SET VARIABLE FASTAGI_STATUS LOCKED",
    ]
    assert service.kinds == ["deactivation_failed", "deactivation_locked_out"]
    assert service.events[1].details["scope"] == "global"
    assert "101" not in store.locked
    assert service.deactivations == []
    assert any(
        r.getMessage() == "deactivation locked system-wide after wrong PINs" for r in caplog.records
    )


async def test_global_limit_zero_is_off():
    service, tts = with_alarms(ER_ALARM), FakeTts()
    store = FakeStore(total_failures=1000)
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), PLAYED, OK)
    await run(deactivate(service, store, tts, global_pin_failures=0), asterisk)
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS DEACTIVATED"


async def test_no_active_alarm_is_said_without_asking_for_the_pin():
    service, store, tts = FakeService(), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:] == [
        playback(tts, prompts.NO_ALARM),
        "SET VARIABLE FASTAGI_STATUS NOALARM",
    ]


async def test_right_pin_deactivates_the_one_active_alarm(caplog):
    caplog.set_level(logging.DEBUG)
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        pin_prompt(tts),
        playback(tts, prompts.DEACTIVATED_ONE.format(department="Emergency Room")),
        "SET VARIABLE FASTAGI_STATUS DEACTIVATED",
    ]
    assert service.deactivations == [(11, "extension 101", "PIN")]
    assert service.deactivating_calls == [UNIQUEID]
    assert store.cleared == ["101"]
    assert service.kinds == []  # the service itself records "deactivated"
    logged = logged_text(caplog, asterisk)
    assert PIN not in logged


async def test_wrong_pin_then_right_pin(caplog):
    caplog.set_level(logging.DEBUG)
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits("9999"), digits(PIN), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:3] == [pin_prompt(tts), pin_prompt(tts, prompts.PIN_WRONG)]
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS DEACTIVATED"
    assert service.kinds == ["deactivation_failed"]
    assert service.events[0].details == {
        "route": "deactivate",
        "uniqueid": UNIQUEID,
        "channel": "PJSIP/101-00000001",
        "attempt": 1,
    }
    assert store.cleared == ["101"]
    logged = logged_text(caplog, asterisk)
    assert "9999" not in logged
    assert PIN not in logged


async def test_wrong_pins_lock_the_extension_out():
    service, tts = with_alarms(ER_ALARM), FakeTts()
    store = FakeStore(FakeSettings(pin_attempts=2))
    asterisk = ScriptedAsterisk(UNSET, digits("1111"), digits("2222"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[-2:] == [
        playback(tts, prompts.LOCKED_OUT),
        "SET VARIABLE FASTAGI_STATUS LOCKED",
    ]
    assert service.kinds == [
        "deactivation_failed",
        "deactivation_failed",
        "deactivation_locked_out",
    ]
    assert service.deactivations == []
    assert "101" in store.locked


async def test_wrong_pins_without_lockout_end_the_call():
    service, tts = with_alarms(ER_ALARM), FakeTts()
    store = FakeStore(FakeSettings(pin_attempts=2, lockout_seconds=0))

    async def never_locks(extension, max_failures, lockout_seconds):
        return None

    store.record_pin_failure = never_locks  # type: ignore[method-assign]
    asterisk = ScriptedAsterisk(UNSET, digits("1111"), digits("2222"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS WRONGPIN"
    assert service.deactivations == []


async def test_silence_at_the_pin_prompt_is_not_a_wrong_pin():
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, SILENCE, digits(PIN), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:3] == [pin_prompt(tts), pin_prompt(tts)]
    assert service.kinds == []
    assert store.failures == {}
    assert service.deactivations == [(11, "extension 101", "PIN")]


async def test_a_site_speaking_polish_names_its_alarms_in_polish_words():
    # ER has no language of its own: the site's default, Polish, applies to its
    # deactivator; an unknown department's extension and a drill are named in Polish.
    drill = FakeAlarm(14, "Pharmacy", "205", is_drill=True)
    service, store, tts = with_alarms(UNKNOWN_ALARM, drill), FakeStore(), FakeTts()
    store.settings = FakeSettings(default_language="pl")
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), digits("9"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    polish = load_languages().get("pl")
    menu = (
        "Naciśnij 1: nieznany dział, numer wewnętrzny jeden pięć zero. "
        "Naciśnij 2: test działu Pharmacy. "
        "Naciśnij 9, aby wyłączyć wszystkie alarmy."
    )
    assert asterisk.commands[1:4] == [
        pin_prompt(tts, polish.text("pin_prompt")),
        f"GET DATA {tts.name(menu)} 5000 1",
        playback(tts, polish.text("deactivated_all")),
    ]
    assert set(tts.voices.values()) == {"pl"}


async def test_menu_names_the_departments_and_one_key_chooses_one():
    service, store, tts = (
        with_alarms(ER_ALARM, PHARMACY_ALARM, UNKNOWN_ALARM),
        FakeStore(),
        FakeTts(),
    )
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), digits("2"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    menu = (
        "Press 1 for Emergency Room. Press 2 for Pharmacy. "
        "Press 3 for unknown department, extension one five zero. Press 9 for all alarms."
    )
    assert asterisk.commands[2] == f"GET DATA {tts.name(menu)} 5000 1"
    assert service.deactivations == [(12, "extension 101", "PIN")]
    assert [alarm.id for alarm in service.alarms] == [11, 13]
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS DEACTIVATED"


async def test_menu_nine_chooses_all():
    service, store, tts = with_alarms(ER_ALARM, PHARMACY_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), digits("9"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert [d[0] for d in service.deactivations] == [11, 12]
    assert asterisk.commands[-2] == playback(tts, prompts.DEACTIVATED_ALL)


async def test_menu_without_a_valid_choice_deactivates_nothing():
    service, store, tts = with_alarms(ER_ALARM, PHARMACY_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), digits("5"), SILENCE, PLAYED, OK)
    await run(deactivate(service, store, tts, menu_attempts=2), asterisk)

    assert service.deactivations == []
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS NOCHOICE"


async def test_menu_fallback_spells_the_extensions():
    service, store, tts = with_alarms(ER_ALARM, PHARMACY_ALARM), FakeStore(), FakeTts(fail=True)
    # "vm-press", "digits/1", then "1" pressed during "for".
    asterisk = ScriptedAsterisk(
        UNSET, digits(PIN), STREAMED, STREAMED, digits(str(ord("1"))), PLAYED, OK
    )
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1] == "GET DATA agent-pass 6000 12"
    assert asterisk.commands[2:5] == [
        "STREAM FILE vm-press 0123456789*#",
        "STREAM FILE digits/1 0123456789*#",
        "STREAM FILE for 0123456789*#",
    ]
    assert service.deactivations == [(11, "extension 101", "PIN")]
    assert asterisk.commands[5] == "EXEC Playback de-activated"


async def test_menu_fallback_names_every_alarm_by_its_extension():
    service, store, tts = with_alarms(ER_ALARM, PHARMACY_ALARM), FakeStore(), FakeTts(fail=True)
    lead = 15  # 7 sounds per alarm, then "vm-press"; "digits/9" is GET DATA's
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), *[STREAMED] * lead, digits("9"), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    streamed = [c.split()[2] for c in asterisk.commands if c.startswith("STREAM FILE")]
    assert streamed == [
        *("vm-press", "digits/1", "for", "extension", "digits/1", "digits/0", "digits/1"),
        *("vm-press", "digits/2", "for", "extension", "digits/2", "digits/0", "digits/5"),
        "vm-press",
    ]
    assert "GET DATA digits/9 5000 1" in asterisk.commands
    assert [d[0] for d in service.deactivations] == [11, 12]


async def test_hang_up_during_the_pin_is_recorded():
    service, store, tts = with_alarms(ER_ALARM), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, HANGUP, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert service.kinds == ["caller_hung_up"]
    assert service.events[0].details["stage"] == "pin"
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS HANGUP"
    assert service.deactivations == []


# ---- deactivate while PostgreSQL is down ---------------------------------------------


class DownStore(FakeStore):
    """PostgreSQL refuses connections: every call the deactivation makes fails."""

    async def deactivator_pin_hash(self, extension: str) -> str | None:
        raise ConnectionRefusedError("PostgreSQL is down")


class DownService(FakeService):
    """PIN checked, then PostgreSQL goes away: the service refuses to deactivate."""

    async def deactivate(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> bool:
        raise DatabaseDown("deactivate")


def assert_refused_unavailable(service: FakeService, stage: str) -> None:
    assert service.kinds == ["deactivation_refused"]
    assert service.events[0].details == {
        "route": "deactivate",
        "uniqueid": UNIQUEID,
        "channel": "PJSIP/101-00000001",
        "reason": "database unavailable",
        "stage": stage,
    }


async def test_database_down_before_the_pin_says_the_alarm_goes_on():
    service, store, tts = with_alarms(ER_ALARM), DownStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        playback(tts, prompts.UNAVAILABLE),
        "SET VARIABLE FASTAGI_STATUS UNAVAILABLE",
    ]
    assert_refused_unavailable(service, "authorise")
    assert service.deactivations == []
    assert asterisk.unused == 0


async def test_database_down_after_the_right_pin_deactivates_nothing():
    service, store, tts = DownService(alarms=[ER_ALARM]), FakeStore(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, digits(PIN), PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands == [
        "GET VARIABLE AMPUSER",
        pin_prompt(tts),
        playback(tts, prompts.UNAVAILABLE),
        "SET VARIABLE FASTAGI_STATUS UNAVAILABLE",
    ]
    assert_refused_unavailable(service, "deactivate")
    assert service.alarms == [ER_ALARM]


async def test_database_down_and_tts_down_plays_built_in_sounds():
    service, store, tts = with_alarms(ER_ALARM), DownStore(), FakeTts(fail=True)
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts), asterisk)

    assert asterisk.commands[1:] == [
        "EXEC Playback im-sorry&all-circuits-busy-now&please-try-call-later",
        "SET VARIABLE FASTAGI_STATUS UNAVAILABLE",
    ]
    assert_refused_unavailable(service, "authorise")


async def test_a_database_that_does_not_answer_is_unavailable_after_the_deadline():
    class Hanging(FakeStore):
        async def lockout_until(self, extension: str) -> datetime | None:
            await asyncio.Event().wait()  # a host that vanished: no reply, no error
            return None

    service, store, tts = with_alarms(ER_ALARM), Hanging(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, PLAYED, OK)
    await run(deactivate(service, store, tts, database_timeout=0.05), asterisk)

    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS UNAVAILABLE"
    assert_refused_unavailable(service, "authorise")


async def test_a_database_bug_is_still_an_error():
    class Buggy(FakeStore):
        async def deactivator_pin_hash(self, extension: str) -> str | None:
            raise KeyError("not an outage")

    service, store, tts = with_alarms(ER_ALARM), Buggy(), FakeTts()
    asterisk = ScriptedAsterisk(UNSET, OK)
    with pytest.raises(KeyError):
        await run(deactivate(service, store, tts), asterisk)
    assert asterisk.commands[-1] == "SET VARIABLE FASTAGI_STATUS ERROR"
    assert service.kinds == ["error"]


def test_every_fallback_prompt_exists_in_the_sandbox_core_sounds():
    directory = Path(__file__).parents[2] / (
        ".cache/sandbox/rootfs/usr/share/asterisk/sounds/en_US_f_Allison"
    )
    if not directory.is_dir():
        pytest.skip("no sandbox image here")
    names = {
        name
        for attribute, value in vars(prompts).items()
        if attribute.startswith("FALLBACK_")
        for name in value
    }
    assert "im-sorry" in names
    assert [name for name in sorted(names) if not list(directory.glob(f"{name}.*"))] == []


@pytest.mark.parametrize(
    ("channel", "endpoint"),
    [
        ("PJSIP/101-0000002a", "101"),
        ("PJSIP/my-trunk-0000002a", "my-trunk"),
        ("PJSIP/-0000002a", None),
        ("PJSIP/101", None),
        ("SIP/101-0000002a", None),
        ("Local/s@panic-alarm-00000001;2", None),
        ("", None),
    ],
)
def test_the_endpoint_of_a_channel_name(channel: str, endpoint: str | None) -> None:
    assert pjsip_endpoint(channel) == endpoint
