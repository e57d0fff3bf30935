"""The panic route end to end: a SIPp desk phone dials *555 in the sandbox Asterisk, the
dialplan hands the call to our AgiServer, the flow asks by text-to-speech, reads DTMF sent
as SIP INFO, and the real AlarmService activates alarms in PostgreSQL and pages over AMI.

Keys: the person at the SIPp phone types each answer when a prompt plays, as Asterisk's
AMI reports it (fastagi_dev/sandbox/keypad.py); a key during GET DATA's prompt
interrupts it and counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fastagi.config import FlowSettings
from fastagi.domain.directory import UNKNOWN_DEPARTMENT
from fastagi.domain.pins import hash_pin_async
from fastagi.flows import prompts
from fastagi.tts import Prompt, TextToSpeech, TtsError, TtsSettings
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from fastagi_dev.sandbox.instance import TRUNK_ENDPOINT
from tests import sipp
from tests.e2e.flow_harness import FlowHarness, flow_harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ER = "Emergency Room"
WARD = "Ward 7"
WARD_INTERVAL = 30  # not the schema's default (60): cycle 1 must record this one
PIN = "1234"


@pytest.fixture
async def harness(
    sandbox: Sandbox, agi_port: int, database_dsn: str, tmp_path: Path
) -> AsyncIterator[FlowHarness]:
    async with flow_harness(sandbox, agi_port, database_dsn, tmp_path) as harness:
        await harness.department(ER, "101")
        await harness.prerender(ER, prompts.UNKNOWN_LABEL.format(extension="one five zero"))
        yield harness


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[SandboxAmi]:
    async with await sandbox.ami() as client:
        yield client


async def panic_end(ami: SandboxAmi) -> dict[str, str]:
    event = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    return {"AGISTATUS": event["AGISTATUS"], "FASTAGI_STATUS": event["FASTAGI_STATUS"]}


async def test_confirm_activates_the_alarm_and_pages(harness: FlowHarness, ami: SandboxAmi) -> None:
    # The department pages a phone, to measure DTMF -> first INVITE.
    await harness.department(WARD, "107", phones=[231], interval=WARD_INTERVAL)
    await harness.prerender(WARD)
    phone = await harness.phone(231)
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=107,
            answers=["1"],
        )
        first_invite = (await phone.wait_invites(1, within=10))[0]
    call.check()
    assert panic.errors == []
    assert await panic_end(ami) == {"AGISTATUS": "SUCCESS", "FASTAGI_STATUS": "CONFIRMED"}
    assert call.received("BYE")

    assert await harness.kinds() == ["triggered", "prompt_played", "confirmed", "activated"]
    [alarm] = await harness.store.alarms.active_alarms()
    assert (alarm.department_name, alarm.extension, alarm.state) == (WARD, "107", "active")
    [triggered] = await harness.events("triggered")
    assert (triggered["extension"], triggered["department"]) == ("107", WARD)
    [played] = await harness.events("prompt_played")
    assert '"tts": true' in played["details"]

    # Latency: the INFO carrying "1" -> activate() returned -> first paging INVITE.
    [info] = [m for m in call.messages if not m.received and m.first_line.startswith("INFO")]
    dtmf_at = info.time.timestamp()
    [activated_at] = harness.service.activated_at
    to_activate = activated_at - dtmf_at
    to_invite = first_invite.timestamp() - dtmf_at
    print(f"DTMF -> activate() returned: {to_activate * 1000:.0f} ms")
    print(f"DTMF -> first paging INVITE: {to_invite * 1000:.0f} ms")
    assert 0 < to_activate < 1.0
    assert 0 < to_invite < 2.0

    # Deactivator 150 stops it after the first page, a wrong PIN first.
    await harness.store.deactivators.set_deactivator("150", await hash_pin_async(PIN))
    await harness.tts.prerender([prompts.DEACTIVATED_ONE.format(department=WARD)])
    await wait_cycles(harness, alarm.id, 1)
    async with harness.serving() as (_, deactivate):
        stop = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir / "deactivate",
            service="*556",
            ext=150,
            answers=["9#", f"{PIN}#"],
        )
    stop.check()
    assert deactivate.errors == []

    # The timeline: the panic call, the alarm's own life, the deactivating call.
    timeline = await harness.store.history.timeline(alarm.id)
    assert [e.kind for e in timeline] == [
        "triggered",
        "prompt_played",
        "confirmed",
        "activated",
        "lamp_changed",  # Custom:PANIC
        "lamp_changed",  # Custom:PANIC_<ward>
        "page_cycle",
        "deactivation_failed",
        "deactivated",
        "lamp_changed",
        "lamp_changed",
    ]
    panic_call = timeline[3].details["uniqueid"]  # activated: the service's record
    stop_call = timeline[8].details["uniqueid"]  # deactivated
    assert panic_call != stop_call
    assert [e.details["uniqueid"] for e in timeline[:3]] == [panic_call] * 3
    assert timeline[7].details["uniqueid"] == stop_call
    assert [e.alarm_id for e in timeline] == [None] * 3 + [alarm.id] * 4 + [None] + [alarm.id] * 3
    assert {e.details["state"] for e in timeline[4:6]} == {"BUSY"}
    assert {e.details["state"] for e in timeline[-2:]} == {"NOT_INUSE"}
    [cycle] = [e for e in timeline if e.kind == "page_cycle"]
    assert (cycle.details["cycle"], cycle.details["interval"]) == (1, WARD_INTERVAL)


async def wait_cycles(harness: FlowHarness, alarm_id: int, count: int, within: float = 20) -> None:
    """Until the alarm's ``count``-th page_cycle event is written, i.e. that page ended
    (``alarm.cycles`` counts a page when it starts); the database offers nothing to wait
    on but a poll."""
    async with asyncio.timeout(within):
        while True:
            timeline = await harness.store.history.timeline(alarm_id)
            if sum(e.kind == "page_cycle" for e in timeline) >= count:
                return
            await asyncio.sleep(0.1)


async def test_cancel_raises_no_alarm(harness: FlowHarness, ami: SandboxAmi) -> None:
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=101,
            answers=["2"],
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "CANCELLED"
    assert await harness.kinds() == ["triggered", "prompt_played", "cancelled"]
    assert await harness.store.alarms.active_alarms() == []


@pytest.mark.parametrize(("policy", "alarms"), [("cancel", 0), ("activate", 1)])
async def test_no_answer_applies_the_policy(
    harness: FlowHarness, ami: SandboxAmi, policy: str, alarms: int
) -> None:
    await harness.store.policy.set_policy(no_answer_policy=policy, confirmation_attempts=2)
    settings = FlowSettings(confirm_timeout_ms=800)
    async with harness.serving(settings) as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=101,
            within=40,
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "NOANSWER"
    expected = ["triggered", "prompt_played", "prompt_played", "no_answer"]
    assert await harness.kinds() == expected + ["activated"] * alarms
    [no_answer] = await harness.events("no_answer")
    assert f'"policy": "{policy}"' in no_answer["details"]
    assert len(await harness.store.alarms.active_alarms()) == alarms


async def test_invalid_key_prompts_again_then_confirm(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=101,
            answers=["7", "1"],
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "CONFIRMED"
    assert await harness.kinds() == [
        "triggered",
        "prompt_played",
        "prompt_played",
        "confirmed",
        "activated",
    ]
    [alarm] = await harness.store.alarms.active_alarms()
    assert alarm.department_name == ER


class HeldQuestion:
    """The harness's text-to-speech with the panic question's render held, as a cold
    render on a loaded machine is, until ``released`` (or its timeout: TtsError)."""

    def __init__(self, tts: TextToSpeech) -> None:
        self._tts = tts
        self.released = asyncio.Event()

    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        voice: str | None = None,
    ) -> Prompt:
        if text.startswith("Panic alarm for"):
            try:
                async with asyncio.timeout(timeout):
                    await self.released.wait()
            except TimeoutError:
                raise TtsError("held past its timeout") from None
        return await self._tts.render(text, timeout=timeout, voice=voice)


async def test_1_pressed_before_the_question_is_ready_confirms(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    # The person presses 1 as soon as the server listens, while the question is still
    # held in its render: not lost, it is the answer, and no question is played.
    held = HeldQuestion(harness.tts)
    async with harness.serving(tts=held) as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=101,
            answers=["1"],
            before_prompt=True,
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "CONFIRMED"
    assert await harness.kinds() == ["triggered", "confirmed", "activated"]
    [confirmed] = await harness.events("confirmed")
    assert json.loads(confirmed["details"])["before_prompt"] is True
    [alarm] = await harness.store.alarms.active_alarms()
    assert alarm.department_name == ER


async def test_hang_up_mid_prompt_raises_no_alarm(harness: FlowHarness, ami: SandboxAmi) -> None:
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox, harness.workdir, service="*555", ext=101, hang_up=True
        )
        await asyncio.wait_for(panic.finished.wait(), 10)
    call.check()
    assert panic.errors == []
    end = await panic_end(ami)
    assert end["AGISTATUS"] == "HANGUP"
    assert end["FASTAGI_STATUS"] == "HANGUP"
    assert await harness.kinds() == ["triggered", "prompt_played", "caller_hung_up"]
    assert await harness.store.alarms.active_alarms() == []


async def test_unknown_extension_raises_an_alarm_of_unknown_department(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=150,
            answers=["1"],
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "CONFIRMED"
    [alarm] = await harness.store.alarms.active_alarms()
    assert (alarm.department_name, alarm.extension) == (UNKNOWN_DEPARTMENT, "150")
    assert alarm.alarm_key == "extension:150"
    [triggered] = await harness.events("triggered")
    assert triggered["department"] == UNKNOWN_DEPARTMENT


async def test_without_tts_the_built_in_sounds_ask_and_the_alarm_works(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    broken = TextToSpeech(TtsSettings(directory=harness.sandbox.tts_dir))
    await broken.aclose()  # a closed service fails every render with TtsError
    async with harness.serving(tts=broken) as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox,
            harness.workdir,
            service="*555",
            ext=101,
            answers=["1"],
        )
    call.check()
    assert panic.errors == []
    assert (await panic_end(ami))["FASTAGI_STATUS"] == "CONFIRMED"
    [played] = await harness.events("prompt_played")
    assert '"tts": false' in played["details"]
    [alarm] = await harness.store.alarms.active_alarms()
    assert alarm.department_name == ER


async def test_server_down_the_dialplan_asks_itself_and_2_cancels(
    sandbox: Sandbox, ami: SandboxAmi, tmp_path: Path
) -> None:
    # No AgiServer on agi_port: AGI() fails, and the dialplan asks by itself
    # ([fastagi-panic-fallback], tests/e2e/test_fallback.py has the rest). 2 cancels:
    # no alarm is left in astdb for a server to adopt, and the caller never hears
    # "something is terribly wrong" on a speakerphone.
    started = time.monotonic()
    call = await sipp.call_dtmf(sandbox, tmp_path, service="*555", ext=101, answers=["2"])
    call.check()
    event = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    assert (event["AGISTATUS"], event["FASTAGI_STATUS"], event["FALLBACK"]) == (
        "FAILURE",
        "",
        "CANCELLED",
    )
    # "Cancelled." lasts about a second: the BYE comes after it.
    assert time.monotonic() - started > 1.0
    assert "fastagi-panic-fallback/" not in await sandbox.acli(
        "database show fastagi-panic-fallback"
    )
    assert "something-terribly-wrong" not in sandbox.log_path.read_text(errors="replace")


async def test_custom_destination_raises_the_alarm_hands_free(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    # A FreePBX Custom Destination jumps to panic-alarm,s,1; here a Local channel does,
    # for a hands-free device that cannot press anything. On an internal call FreePBX has
    # set AMPUSER (sub-user-callerid): a Local channel is no extension's endpoint, so
    # that is what identifies the caller.
    await harness.store.policy.set_policy(no_answer_policy="activate", confirmation_attempts=1)
    async with harness.serving(FlowSettings(confirm_timeout_ms=500)) as (panic, _):
        response = await ami.action(
            {
                "Action": "Originate",
                "Channel": "Local/s@panic-alarm/n",
                "Application": "Wait",
                "Data": "30",
                "CallerID": "Hotline <101>",
                "Variable": "AMPUSER=101",
                "Async": "true",
            }
        )
        assert response["Response"] == "Success"
        end = await panic_end(ami)
    assert panic.errors == []
    assert end == {"AGISTATUS": "SUCCESS", "FASTAGI_STATUS": "NOANSWER"}
    [alarm] = await harness.store.alarms.active_alarms()
    assert (alarm.department_name, alarm.extension) == (ER, "101")
    assert await harness.kinds() == ["triggered", "prompt_played", "no_answer", "activated"]


async def test_a_trigger_from_a_trunk_is_refused_and_recorded(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    # An outside caller reaches the panic route (an IVR option) with a caller id that
    # claims to be desk phone 101, in the Emergency Room. Refused without a word: the
    # BYE comes at once.
    async with harness.serving() as (panic, _):
        call = await sipp.call_dtmf(
            harness.sandbox, harness.workdir, service="*555", ext=TRUNK_ENDPOINT
        )
    call.check()
    assert panic.errors == []
    assert await panic_end(ami) == {"AGISTATUS": "SUCCESS", "FASTAGI_STATUS": "REFUSED"}
    assert await harness.store.alarms.active_alarms() == []
    [refused] = await harness.events("trigger_refused")
    details = json.loads(refused["details"])
    assert details["reason"] == "untrusted caller"
    assert details["channel"].startswith(f"PJSIP/{TRUNK_ENDPOINT}-")
    assert details["callerid"] == "101"
    assert await harness.events("triggered") == []
