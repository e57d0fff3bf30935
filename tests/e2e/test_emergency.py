"""The emergency call end to end: EmergencyCaller over the sandbox's AMI, the
``acknowledge`` route on a real AgiServer, PostgreSQL, and SIPp phones as responders.

Phones (paging endpoints with static contacts, 271-279, used by no other test: a call
a test leaves behind, its INVITE retransmitted by Asterisk for up to 32 s to a port no
SIPp listens on, must not reach a phone of this file): 271, 274, 275 answer and press 1
by SIP INFO; 272 answers and presses nothing; 273 is busy (486); 279 has no phone at all
(it rings until the ring timeout).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fastagi.agi.server import AgiServer
from fastagi.alarms.emergency import EmergencyCaller, EmergencySettings
from fastagi.alarms.paging import Pager
from fastagi.ami import AmiClient
from fastagi.config import AgiSettings, AlarmSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.flows.acknowledge import AcknowledgeFlow
from fastagi.store import Stores
from fastagi.store.emergency import EmergencyStore
from fastagi.tts import TextToSpeech
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.alarm_stack import open_pool, sandbox_ami, sandbox_tts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ACK_PHONE, SILENT_PHONE, BUSY_PHONE, NO_PHONE = 271, 272, 273, 279
ESCALATION_PHONE, OTHER_ACK_PHONE, PAGED_PHONE = 274, 275, 276
# Fast settings: short rings, one short wait for the key after each announcement.
BASE = EmergencySettings(
    ring_timeout=3,
    rounds=1,
    escalation_rounds=1,
    round_pause=0.2,
    ack_timeout=60,
    announcement_repeats=2,
    digit_timeout_ms=1000,
    poll_interval=0.5,
    max_call_seconds=30,
    emergency_cid_lookup=True,
)


def dial(ext: int) -> str:
    return f"PJSIP/{ext}"


@dataclass
class Harness:
    sandbox: Sandbox
    pool: asyncpg.Pool[asyncpg.Record]
    ami: AmiClient
    tts: TextToSpeech
    store: Stores
    workdir: Path
    stack: AsyncExitStack
    agi_port: int
    escalated: list[int] = field(default_factory=list)
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    hook_called: asyncio.Event = field(default_factory=asyncio.Event)

    async def alarm(self, name: str = "Ward E", extension: str = "101") -> Alarm:
        alarm, created = await self.store.alarms.activate(
            f"extension:{extension}", None, name, extension
        )
        assert created
        return alarm

    async def caller(self, settings: EmergencySettings) -> EmergencyCaller:
        async def on_escalated(alarm: Any) -> None:
            self.escalated.append(alarm.id)
            self.hook_called.set()

        async def on_acknowledged(alarm: Any, by: str) -> None:
            self.acknowledged.append((alarm.id, by))
            self.hook_called.set()

        async def record(event: HistoryEvent) -> None:
            await self.store.history.append_event(event)

        caller = EmergencyCaller(
            self.ami,
            EmergencyStore(self.pool),
            settings,
            record=record,
            instance_id="emergency-tests",
            on_escalated=on_escalated,
            on_acknowledged=on_acknowledged,
        )
        self.stack.push_async_callback(caller.close)
        flow = AcknowledgeFlow(caller, self.tts, settings)
        server = AgiServer(AgiSettings(port=self.agi_port), {"acknowledge": flow})
        await self.stack.enter_async_context(server)
        return caller

    async def phone(self, ext: int, scenario: str) -> sipp.Phone:
        return await self.stack.enter_async_context(
            sipp.Phone(self.sandbox, ext, self.workdir, scenario)
        )

    async def ack_phone(self, ext: int, answers: Sequence[str] = ("1",)) -> sipp.Phone:
        """A responder who types 1 at the announcement (``answers``: one per prompt)."""
        return await self.stack.enter_async_context(
            sipp.Responder(self.sandbox, ext, self.workdir, answers)
        )

    async def events(self, alarm_id: int, kind: EventKind) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM alarm_events WHERE alarm_id = $1 AND kind = $2 ORDER BY id",
            alarm_id,
            str(kind),
        )

    async def outcomes(self, alarm_id: int) -> list[tuple[str, str]]:
        rows = await self.events(alarm_id, EventKind.EMERGENCY_CALL)
        return [
            (json.loads(r["details"])["destination"], json.loads(r["details"])["outcome"])
            for r in rows
        ]


@pytest.fixture
async def harness(
    sandbox: Sandbox, database_dsn: str, agi_port: int, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        pool = await open_pool(stack, database_dsn, max_size=8)
        ami = await sandbox_ami(stack, sandbox)
        tts = sandbox_tts(stack, sandbox)
        yield Harness(sandbox, pool, ami, tts, Stores.over(pool), tmp_path, stack, agi_port)


async def test_answer_and_key_1_acknowledges(harness: Harness) -> None:
    settings = BASE.model_copy(update={"destinations": [dial(ACK_PHONE)]})
    phone = await harness.ack_phone(ACK_PHONE)
    caller = await harness.caller(settings)
    alarm = await harness.alarm()

    started = time.time()
    assert caller.start(alarm) is True
    returned_after = time.time() - started
    assert not caller.start(alarm)  # one walk per alarm
    (invite,) = await phone.wait("INVITE")
    assert await caller.wait(alarm.id, 20)
    ack = await harness.pool.fetchrow(
        "SELECT * FROM alarm_acknowledgements WHERE alarm_id = $1", alarm.id
    )
    assert ack is not None
    (info,) = phone.sent("INFO")
    first_invite = invite.timestamp() - started
    dtmf_to_row = ack["acknowledged_at"].timestamp() - info.time.timestamp()
    print(
        f"start() returned after {returned_after * 1000:.2f} ms; first INVITE "
        f"{first_invite * 1000:.0f} ms after start(); DTMF 1 to acknowledged row "
        f"{dtmf_to_row * 1000:.0f} ms"
    )
    assert returned_after < 0.01
    assert first_invite < 1.0
    assert 0 <= dtmf_to_row < 1.0
    assert ack["acknowledged_by"] == dial(ACK_PHONE)
    assert ack["attempt"].startswith(f"emergency-{alarm.id}-")
    assert await harness.outcomes(alarm.id) == [(dial(ACK_PHONE), "acknowledged")]
    (event,) = await harness.events(alarm.id, EventKind.ACKNOWLEDGED)
    assert f'"by": "{dial(ACK_PHONE)}"' in event["details"]
    assert await harness.events(alarm.id, EventKind.ESCALATED) == []
    await asyncio.wait_for(harness.hook_called.wait(), 5)
    assert harness.acknowledged == [(alarm.id, dial(ACK_PHONE))]
    # The call says thanks and ends by itself: Asterisk sends the BYE.
    await phone.wait("BYE")
    # The caller id shows the alarm's extension and department.
    assert '"PANIC Ward E" <sip:101@' in phone.received("INVITE")[0].text


async def test_no_answer_and_busy_go_on_to_the_next_destination(harness: Harness) -> None:
    settings = BASE.model_copy(
        update={"destinations": [dial(NO_PHONE), dial(BUSY_PHONE), dial(ACK_PHONE)]}
    )
    busy = await harness.phone(BUSY_PHONE, "uas_busy.xml")
    phone = await harness.ack_phone(ACK_PHONE)
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    caller.start(alarm)
    assert await caller.wait(alarm.id, 30)
    assert await harness.outcomes(alarm.id) == [
        (dial(NO_PHONE), "no_answer"),
        (dial(BUSY_PHONE), "busy"),
        (dial(ACK_PHONE), "acknowledged"),
    ]
    details = [
        json.loads(r["details"]) for r in await harness.events(alarm.id, EventKind.EMERGENCY_CALL)
    ]
    # OriginateResponse's Reason as Asterisk 22 sends it: 3 no answer, 4 answered; a 486
    # comes as 0 (failure), the busy only in the channel's hangup cause 17.
    assert [d["reason"] for d in details] == [3, 0, 4]
    assert details[1]["hangup_cause"] == 17
    assert len(busy.received("INVITE")) == 1
    assert len(phone.received("INVITE")) == 1
    assert busy.received("INVITE")[0].time < phone.received("INVITE")[0].time


async def test_rounds_limit_then_escalation_when_the_list_is_exhausted(harness: Harness) -> None:
    settings = BASE.model_copy(
        update={
            "destinations": [dial(BUSY_PHONE)],
            "rounds": 3,
            "escalation_destinations": [dial(ESCALATION_PHONE)],
        }
    )
    busy = await harness.phone(BUSY_PHONE, "uas_busy.xml")
    escalation = await harness.ack_phone(ESCALATION_PHONE)
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    caller.start(alarm)
    assert await caller.wait(alarm.id, 30)
    assert len(busy.received("INVITE")) == 3  # rounds = 3, then no more
    assert await harness.outcomes(alarm.id) == [
        *[(dial(BUSY_PHONE), "busy")] * 3,
        (dial(ESCALATION_PHONE), "acknowledged"),
    ]
    (escalated,) = await harness.events(alarm.id, EventKind.ESCALATED)
    assert '"first_list_exhausted": true' in escalated["details"]
    assert harness.escalated == [alarm.id]
    assert len(escalation.received("INVITE")) == 1
    ack = await harness.pool.fetchval(
        "SELECT acknowledged_by FROM alarm_acknowledgements WHERE alarm_id = $1", alarm.id
    )
    assert ack == dial(ESCALATION_PHONE)


async def test_escalation_after_ack_timeout_while_the_first_list_still_rings(
    harness: Harness,
) -> None:
    settings = BASE.model_copy(
        update={
            "destinations": [dial(SILENT_PHONE)],
            "rounds": 5,
            "ack_timeout": 3.0,
            "escalation_destinations": [dial(OTHER_ACK_PHONE)],
        }
    )
    silent = await harness.phone(SILENT_PHONE, "uas_answer.xml")
    escalation = await harness.ack_phone(OTHER_ACK_PHONE)
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    started = time.time()
    caller.start(alarm)
    (invite,) = await escalation.wait("INVITE", within=10)
    escalated_after = invite.timestamp() - started
    print(f"escalation INVITE {escalated_after:.2f} s after start() (ack_timeout 3 s)")
    assert 3.0 <= escalated_after < 4.0
    assert await caller.wait(alarm.id, 20)
    (escalated,) = await harness.events(alarm.id, EventKind.ESCALATED)
    assert '"first_list_exhausted": false' in escalated["details"]
    outcomes = await harness.outcomes(alarm.id)
    assert (dial(OTHER_ACK_PHONE), "acknowledged") in outcomes
    assert all(
        o in {"not_acknowledged", "cancelled"} for d, o in outcomes if d != dial(OTHER_ACK_PHONE)
    )
    # The silent phone's call in progress was hung up once the escalation got its 1.
    await silent.wait("BYE", count=len(silent.received("INVITE")))
    assert harness.escalated == [alarm.id]


async def test_nobody_answers_every_round_and_list_is_recorded(harness: Harness) -> None:
    settings = BASE.model_copy(update={"destinations": [dial(BUSY_PHONE)], "rounds": 2})
    busy = await harness.phone(BUSY_PHONE, "uas_busy.xml")
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    caller.start(alarm)
    assert await caller.wait(alarm.id, 20)
    assert len(busy.received("INVITE")) == 2
    assert len(await harness.events(alarm.id, EventKind.EMERGENCY_EXHAUSTED)) == 1
    assert len(await harness.events(alarm.id, EventKind.ESCALATED)) == 1
    assert await harness.pool.fetchval("SELECT count(*) FROM alarm_acknowledgements") == 0


async def test_stop_hangs_up_the_call_in_progress(harness: Harness) -> None:
    settings = BASE.model_copy(
        update={"destinations": [dial(SILENT_PHONE)], "announcement_repeats": 10}
    )
    silent = await harness.phone(SILENT_PHONE, "uas_answer.xml")
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    caller.start(alarm)
    await silent.wait("INVITE")
    await asyncio.sleep(1.0)  # answered, the announcement plays
    stopped_at = time.time()
    assert await caller.stop(alarm.id) is True
    (bye,) = await silent.wait("BYE", within=5)
    print(f"stop() to BYE: {(bye.timestamp() - stopped_at) * 1000:.0f} ms")
    assert bye.timestamp() - stopped_at < 1.0
    assert not caller.running(alarm.id)
    assert await harness.outcomes(alarm.id) == [(dial(SILENT_PHONE), "cancelled")]
    assert await caller.stop(alarm.id) is False


async def test_the_emergency_call_does_not_delay_paging(harness: Harness) -> None:
    settings = BASE.model_copy(update={"destinations": [dial(ACK_PHONE)]})
    # The responder stays silent at the first announcement and acknowledges at the
    # second: the page below is long over by then (a whole announcement plus the wait
    # for a key), so the emergency call is still running when it ends.
    phone = await harness.ack_phone(ACK_PHONE, answers=["", "1"])
    paged = await harness.stack.enter_async_context(
        sipp.PagingPhone(harness.sandbox, PAGED_PHONE, harness.workdir)
    )
    caller = await harness.caller(settings)
    alarm = await harness.alarm()
    pager = Pager(harness.ami, AlarmSettings(lead_in=0.2, page_timeout=5, max_page_seconds=20))
    started = time.time()
    caller.start(alarm)
    page = await pager.page(alarm.id, 1, [dial(PAGED_PHONE)], ["beep"])
    (paged_invite,) = paged.invite_times
    print(f"page INVITE {(paged_invite.timestamp() - started) * 1000:.0f} ms after start()")
    assert paged_invite.timestamp() - started < 1.0
    assert page.ok
    assert caller.running(alarm.id)  # the responder has not pressed 1 yet
    assert await caller.wait(alarm.id, 20)
    assert len(phone.received("INVITE")) == 1
    assert await harness.outcomes(alarm.id) == [(dial(ACK_PHONE), "acknowledged")]


async def test_emergency_cid_from_astdb_and_fixed_caller_id(harness: Harness) -> None:
    await harness.sandbox.acli("database put DEVICE 102/emergency_cid 5550199")
    settings = BASE.model_copy(update={"destinations": [dial(ACK_PHONE)]})
    phone = await harness.ack_phone(ACK_PHONE)
    caller = await harness.caller(settings)
    alarm = await harness.alarm("Ward F", "102")
    caller.start(alarm)
    assert await caller.wait(alarm.id, 20)
    assert '"PANIC Ward F" <sip:5550199@' in phone.received("INVITE")[0].text
