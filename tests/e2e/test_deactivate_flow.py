"""The deactivate route end to end: a SIPp desk phone dials *556, enters the PIN as SIP
INFO DTMF ('#' ends it), and the real AlarmService stops alarms in PostgreSQL.

Deactivator: extension 101 with PIN 1234. Alarms are raised through the service itself
(the panic call is test_panic_flow.py's business). The person at the phone types each
answer when its prompt plays (fastagi_dev/sandbox/keypad.py): a key pressed while no
command reads the channel would be lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from fastagi.domain.alarm import Alarm
from fastagi.domain.pins import hash_pin_async
from fastagi.flows import prompts
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from tests import sipp
from tests.e2e.flow_harness import FlowHarness, flow_harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PIN = "1234"
ER, PHARMACY = "Emergency Room", "Pharmacy"


@pytest.fixture
async def harness(
    sandbox: Sandbox, agi_port: int, database_dsn: str, tmp_path: Path
) -> AsyncIterator[FlowHarness]:
    async with flow_harness(sandbox, agi_port, database_dsn, tmp_path) as harness:
        # Paging phone 247: no other test's phone, so no page of another test reaches it.
        await harness.department(ER, "120-129", phones=[247], interval=5)
        await harness.department(PHARMACY, "130-139")
        await harness.store.deactivators.set_deactivator("101", await hash_pin_async(PIN))
        await harness.prerender()
        await harness.tts.prerender(
            [
                prompts.DEACTIVATED_ONE.format(department=ER),
                prompts.DEACTIVATED_ONE.format(department=PHARMACY),
            ]
        )
        yield harness


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[SandboxAmi]:
    async with await sandbox.ami() as client:
        yield client


async def raise_alarm(harness: FlowHarness, extension: str) -> Alarm:
    service = harness.service.service
    department = await service.lookup(extension)
    activation = await service.activate(extension, department, uniqueid=f"test-{extension}")
    return activation.alarm


async def deactivate_end(ami: SandboxAmi) -> dict[str, str]:
    event = await ami.wait_event("UserEvent", UserEvent="FastAGIDeactivateEnd", within=20)
    return {"AGISTATUS": event["AGISTATUS"], "FASTAGI_STATUS": event["FASTAGI_STATUS"]}


async def call(harness: FlowHarness, ext: int, answers: Sequence[str] = ()) -> sipp.SippResult:
    result = await sipp.call_dtmf(
        harness.sandbox,
        harness.workdir / f"call-{ext}-{'-'.join(answers) or 'none'}",
        service="*556",
        ext=ext,
        answers=answers,
    )
    result.check()
    return result


async def test_an_extension_that_is_no_deactivator_is_refused(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    alarm = await raise_alarm(harness, "131")
    async with harness.serving() as (_, deactivate):
        await call(harness, 102)
    assert deactivate.errors == []
    assert await deactivate_end(ami) == {"AGISTATUS": "SUCCESS", "FASTAGI_STATUS": "REFUSED"}
    [refused] = await harness.events("deactivation_refused")
    assert refused["extension"] == "102"
    assert '"reason": "not authorised"' in refused["details"]
    assert [a.id for a in await harness.store.alarms.active_alarms()] == [alarm.id]


async def test_wrong_pin_then_right_pin_stops_the_alarm_and_its_paging(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    phone = await harness.phone(247)
    alarm = await raise_alarm(harness, "121")
    await phone.wait_invites(1)
    async with harness.serving() as (_, deactivate):
        await call(harness, 101, answers=["99#", f"{PIN}#"])
    assert deactivate.errors == []
    assert await deactivate_end(ami) == {"AGISTATUS": "SUCCESS", "FASTAGI_STATUS": "DEACTIVATED"}
    [deactivated_at] = harness.service.deactivated_at

    assert await harness.kinds() == ["activated", "deactivation_failed", "deactivated"]
    stopped = await harness.store.alarms.get_alarm(alarm.id)
    assert stopped is not None
    assert stopped.state == "deactivated"
    assert stopped.deactivated_by == "extension 101"
    assert stopped.deactivation_reason == "PIN"
    # The right PIN cleared the failure count.
    assert await harness.pool.fetchval("SELECT count(*) FROM deactivation_lockouts") == 0
    # No PIN in the history.
    details = await harness.pool.fetch("SELECT details::text AS d FROM alarm_events")
    assert not any(PIN in row["d"] or '"99"' in row["d"] for row in details)

    # The alarm pages every 5 s; nothing may start after the deactivation.
    seen = len(phone.invite_times)
    await asyncio.sleep(6)
    invites = phone.invite_times
    assert len(invites) == seen
    assert all(t.timestamp() < deactivated_at for t in invites)


async def test_wrong_pins_lock_the_extension_out_across_calls(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    await harness.store.policy.set_policy(pin_attempts=2, lockout_seconds=300)
    alarm = await raise_alarm(harness, "131")
    async with harness.serving() as (_, deactivate):
        await call(harness, 101, answers=["11#", "22#"])
        assert (await deactivate_end(ami))["FASTAGI_STATUS"] == "LOCKED"
        # A later call is refused before it may enter any PIN, the right one included.
        await call(harness, 101)
        assert (await deactivate_end(ami))["FASTAGI_STATUS"] == "LOCKED"
    assert deactivate.errors == []
    assert await harness.kinds() == [
        "activated",
        "deactivation_failed",
        "deactivation_failed",
        "deactivation_locked_out",
        "deactivation_refused",
    ]
    [refused] = await harness.events("deactivation_refused")
    assert '"reason": "locked out"' in refused["details"]
    assert await harness.store.deactivators.lockout_until("101") is not None
    assert [a.id for a in await harness.store.alarms.active_alarms()] == [alarm.id]


async def test_with_two_alarms_the_caller_chooses_one(
    harness: FlowHarness, ami: SandboxAmi
) -> None:
    er = await raise_alarm(harness, "121")
    pharmacy = await raise_alarm(harness, "131")
    menu = " ".join(
        [
            prompts.MENU_ITEM.format(key=1, department=ER),
            prompts.MENU_ITEM.format(key=2, department=PHARMACY),
            prompts.MENU_ALL.format(key=9),
        ]
    )
    await harness.tts.prerender([menu])
    async with harness.serving() as (_, deactivate):
        await call(harness, 101, answers=[f"{PIN}#", "1"])
    assert deactivate.errors == []
    assert (await deactivate_end(ami))["FASTAGI_STATUS"] == "DEACTIVATED"
    assert [a.id for a in await harness.store.alarms.active_alarms()] == [pharmacy.id]
    stopped = await harness.store.alarms.get_alarm(er.id)
    assert stopped is not None
    assert (stopped.state, stopped.deactivated_by) == ("deactivated", "extension 101")


async def test_no_active_alarm_is_said(harness: FlowHarness, ami: SandboxAmi) -> None:
    async with harness.serving() as (_, deactivate):
        await call(harness, 101)
    assert deactivate.errors == []
    assert (await deactivate_end(ami))["FASTAGI_STATUS"] == "NOALARM"
    [refused] = await harness.events("deactivation_refused")
    assert '"reason": "no active alarm"' in refused["details"]
