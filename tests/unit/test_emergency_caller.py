"""EmergencyCaller's walk against a scripted AMI and an in-memory store: order, rounds,
escalation, acknowledgement (here and by another server), stop, and what is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from fastagi.alarms.emergency import EmergencyCaller, EmergencySettings
from fastagi.ami import AmiActionError, AmiConnectionLost, Message, OriginateResult
from fastagi.domain.alarm import Alarm
from fastagi.domain.drill import Drill
from fastagi.domain.events import HistoryEvent
from fastagi.store.emergency import Acknowledgement, AcknowledgeResult, AlarmSummary

pytestmark = pytest.mark.timeout(10)

FAST = EmergencySettings(
    ring_timeout=1,
    round_pause=0.0,
    ack_timeout=5.0,
    poll_interval=0.05,
    emergency_cid_lookup=False,
)


@dataclass(frozen=True)
class FakeAlarm:
    id: int = 1
    department_name: str = "Ward 3"
    extension: str = "201"


@dataclass
class FakeAmi:
    """Destinations behave as scripted: "ack" answers and presses 1 after ``talk`` s,
    "silent" answers and hangs up after ``talk`` s, "busy" (Reason 0, Cause 17),
    "noanswer" (Reason 3), "down" (the AMI connection is lost)."""

    behaviour: dict[str, str]
    caller: EmergencyCaller | None = None
    talk: float = 0.05
    calls: list[tuple[str, str | None, dict[str, str]]] = field(default_factory=list)
    hangups: list[str] = field(default_factory=list)
    # What subscribe() registered: (callback, names), as AmiClient keeps them.
    listeners: list[tuple[Callable[[Message], None], frozenset[str]]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    emergency_cid: str | None = None

    def emit_hangup(self, uniqueid: str, cause: int = 16) -> None:
        self.live.discard(uniqueid)
        event = Message([("Event", "Hangup"), ("Uniqueid", uniqueid), ("Cause", str(cause))])
        for callback, names in list(self.listeners):
            if "hangup" in names:
                callback(event)

    async def originate(
        self,
        channel,
        *,
        context,
        exten,
        priority=1,
        variables=None,
        caller_id=None,
        timeout_ms=30000,
        channel_id=None,
    ) -> OriginateResult:
        assert channel_id is not None
        assert context == "fastagi-panic-emergency"
        self.calls.append((channel, caller_id, dict(variables or {})))
        kind = self.behaviour[channel]
        if kind == "down":
            raise AmiConnectionLost("no AMI connection")
        self.live.add(channel_id)
        if kind == "busy":
            asyncio.get_running_loop().call_later(0.01, self.emit_hangup, channel_id, 17)
            return self._result(channel, channel_id, 0)
        if kind == "noanswer":
            await asyncio.sleep(timeout_ms / 1000 / 20)
            self.emit_hangup(channel_id, 19)
            return self._result(channel, channel_id, 3)
        asyncio.get_running_loop().create_task(self._talk(channel, channel_id, kind, variables))
        return self._result(channel, channel_id, 4)

    async def _talk(self, channel, channel_id, kind, variables) -> None:
        await asyncio.sleep(self.talk)
        if channel_id not in self.live:
            return
        if kind == "ack":
            assert self.caller is not None
            await self.caller.acknowledge(
                int(variables["PANIC_ALARM_ID"]),
                by=channel,
                attempt=variables["PANIC_EMERGENCY_ATTEMPT"],
            )
            await asyncio.sleep(0.01)
        self.emit_hangup(channel_id)

    @staticmethod
    def _result(channel: str, channel_id: str, reason: int) -> OriginateResult:
        return OriginateResult(
            action_id="a",
            success=reason == 4,
            reason=reason,
            channel=channel,
            uniqueid=channel_id,
            event=Message([("Event", "OriginateResponse")]),
        )

    async def hangup(self, channel, *, cause=None) -> bool:
        if channel not in self.live:
            return False
        self.hangups.append(channel)
        self.emit_hangup(channel)
        return True

    def subscribe(self, callback: Callable[[Message], None], *names: str) -> Callable[[], None]:
        entry = (callback, frozenset(name.lower() for name in names))
        self.listeners.append(entry)
        return lambda: self.listeners.remove(entry)

    async def action_list(self, name, /, *, reply_timeout=None, **fields) -> list[Message]:
        assert (name, fields) == ("DBGet", {"Family": "DEVICE", "Key": "201/emergency_cid"})
        if self.emergency_cid is None:
            raise AmiActionError("DBGet", "Database entry not found")
        return [
            Message([("Response", "Success")]),
            Message([("Event", "DBGetResponse"), ("Val", self.emergency_cid)]),
            Message([("Event", "DBGetComplete")]),
        ]


@dataclass
class FakeStore:
    state: str = "active"
    acknowledgement: Acknowledgement | None = None
    events: list[HistoryEvent] = field(default_factory=list)
    drill: bool = False

    async def alarm_summary(self, alarm_id: int) -> AlarmSummary | None:
        return AlarmSummary(
            alarm_id,
            "Ward 3",
            "201",
            self.state,
            datetime.now(UTC),
            self.acknowledgement,
            drill=self.drill,
        )

    async def acknowledge(self, alarm_id, *, by, attempt, channel, event) -> AcknowledgeResult:
        if self.acknowledgement is not None:
            return AcknowledgeResult(self.acknowledgement, first=False)
        self.acknowledgement = Acknowledgement(alarm_id, datetime.now(UTC), by, attempt, channel)
        self.events.append(event)
        return AcknowledgeResult(self.acknowledgement, first=True)


@dataclass
class Setup:
    ami: FakeAmi
    store: FakeStore
    caller: EmergencyCaller
    recorded: list[HistoryEvent]  # every event but emergency_dialling
    escalated: list[int]
    acknowledged: list[tuple[int, str]]
    dialling: list[HistoryEvent]  # each attempt's start (what the console shows)

    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.recorded]

    def attempts(self) -> list[tuple[str, str, str]]:
        return [
            (e.details["list"], e.details["destination"], e.details["outcome"])
            for e in self.recorded
            if e.kind == "emergency_call"
        ]


def setup(behaviour: dict[str, str], **settings) -> Setup:
    ami, store = FakeAmi(behaviour), FakeStore()
    recorded: list[HistoryEvent] = []
    escalated: list[int] = []
    acknowledged: list[tuple[int, str]] = []

    dialling: list[HistoryEvent] = []

    async def record(event: HistoryEvent) -> None:
        (dialling if event.kind == "emergency_dialling" else recorded).append(event)

    async def on_escalated(alarm) -> None:
        escalated.append(alarm.id)

    async def on_acknowledged(alarm, by: str) -> None:
        acknowledged.append((alarm.id, by))

    caller = EmergencyCaller(
        ami,
        store,
        FAST.model_copy(update=settings),
        record=record,
        on_escalated=on_escalated,
        on_acknowledged=on_acknowledged,
    )
    ami.caller = caller
    return Setup(ami, store, caller, recorded, escalated, acknowledged, dialling)


async def finish(s: Setup, alarm: FakeAlarm = FakeAlarm()) -> None:
    assert await s.caller.wait(alarm.id, 5)
    await s.caller.close()  # and the hooks


async def test_busy_and_no_answer_then_the_next_destination_acknowledges():
    s = setup(
        {"PJSIP/1": "busy", "PJSIP/2": "noanswer", "PJSIP/3": "ack", "PJSIP/4": "ack"},
        destinations=["PJSIP/1", "PJSIP/2", "PJSIP/3", "PJSIP/4"],
    )
    assert s.caller.start(FakeAlarm())
    await finish(s)
    assert s.attempts() == [
        ("primary", "PJSIP/1", "busy"),
        ("primary", "PJSIP/2", "no_answer"),
        ("primary", "PJSIP/3", "acknowledged"),
    ]
    assert s.store.acknowledgement is not None
    assert s.store.acknowledgement.acknowledged_by == "PJSIP/3"
    assert s.acknowledged == [(1, "PJSIP/3")]
    assert s.escalated == []
    assert "emergency_exhausted" not in s.kinds()
    busy = s.recorded[0].details
    assert (busy["reason"], busy["hangup_cause"], busy["round"]) == (0, 17, 1)
    # Each attempt's start is recorded too, under the same attempt id, before its end:
    # the console shows whom the emergency call is calling now.
    calls = [e for e in s.recorded if e.kind == "emergency_call"]
    assert [(e.details["destination"], e.details["attempt"]) for e in s.dialling] == [
        (e.details["destination"], e.details["attempt"]) for e in calls
    ]
    assert all(d.occurred_at <= c.occurred_at for d, c in zip(s.dialling, calls, strict=True))


async def test_calls_of_alarms_at_once_each_hear_their_own_hangup():
    # One Hangup subscription serves every call in flight, routed by its Uniqueid.
    s = setup(
        {"PJSIP/1": "busy", "PJSIP/2": "noanswer"},
        destinations=["PJSIP/1", "PJSIP/2"],
    )
    first, second = FakeAlarm(id=1), FakeAlarm(id=2)
    assert s.caller.start(first)
    assert s.caller.start(second)
    assert await s.caller.wait(first.id, 5)
    assert await s.caller.wait(second.id, 5)
    await s.caller.close()
    causes = {
        (e.alarm_id, e.details["destination"]): e.details["hangup_cause"]
        for e in s.recorded
        if e.kind == "emergency_call"
    }
    assert causes == {
        (1, "PJSIP/1"): 17,
        (1, "PJSIP/2"): 19,
        (2, "PJSIP/1"): 17,
        (2, "PJSIP/2"): 19,
    }
    # Nothing in flight: nothing left listening.
    assert s.ami.listeners == []


async def test_rounds_repeat_the_list_then_escalate_and_record_exhaustion():
    s = setup(
        {"PJSIP/1": "busy", "PJSIP/2": "noanswer", "PJSIP/9": "silent"},
        destinations=["PJSIP/1", "PJSIP/2"],
        rounds=2,
        escalation_destinations=["PJSIP/9"],
        escalation_rounds=2,
    )
    s.caller.start(FakeAlarm())
    await finish(s)
    assert s.attempts() == [
        ("primary", "PJSIP/1", "busy"),
        ("primary", "PJSIP/2", "no_answer"),
        ("primary", "PJSIP/1", "busy"),
        ("primary", "PJSIP/2", "no_answer"),
        ("escalation", "PJSIP/9", "not_acknowledged"),
        ("escalation", "PJSIP/9", "not_acknowledged"),
    ]
    assert s.kinds()[4] == "escalated"
    assert s.kinds()[-1] == "emergency_exhausted"
    assert s.escalated == [1]
    assert s.acknowledged == []


async def test_escalation_after_ack_timeout_runs_beside_the_first_list():
    s = setup(
        {"PJSIP/1": "silent", "PJSIP/9": "ack"},
        destinations=["PJSIP/1"],
        rounds=20,
        ack_timeout=0.3,
        escalation_destinations=["PJSIP/9"],
    )
    s.ami.talk = 0.2
    s.caller.start(FakeAlarm())
    await finish(s)
    attempts = s.attempts()
    assert ("escalation", "PJSIP/9", "acknowledged") in attempts
    primary = [a for a in attempts if a[0] == "primary"]
    assert 1 <= len(primary) < 20  # the first list stopped once the escalation acked
    escalated = next(e for e in s.recorded if e.kind == "escalated")
    assert escalated.details["first_list_exhausted"] is False
    assert s.escalated == [1]
    assert s.acknowledged == [(1, "PJSIP/9")]


async def test_acknowledged_by_another_server_is_seen_by_polling():
    s = setup({"PJSIP/1": "silent"}, destinations=["PJSIP/1"], rounds=20)
    s.ami.talk = 0.5
    s.caller.start(FakeAlarm())
    await asyncio.sleep(0.1)  # the call is answered and talking
    s.store.acknowledgement = Acknowledgement(1, datetime.now(UTC), "PJSIP/1", "other", None)
    await finish(s)
    assert s.attempts() == [("primary", "PJSIP/1", "cancelled")]
    assert s.acknowledged == [(1, "PJSIP/1")]
    assert s.ami.hangups  # the call of this server was hung up


async def test_an_alarm_acknowledged_before_start_is_not_called():
    s = setup({"PJSIP/1": "ack"}, destinations=["PJSIP/1"])
    s.store.acknowledgement = Acknowledgement(1, datetime.now(UTC), "PJSIP/1", None, None)
    assert s.caller.start(FakeAlarm())
    await finish(s)
    assert s.ami.calls == []
    assert s.recorded == []


async def test_deactivated_elsewhere_ends_the_walk_and_hangs_up():
    s = setup({"PJSIP/1": "silent"}, destinations=["PJSIP/1"], rounds=20)
    s.ami.talk = 2.0
    s.caller.start(FakeAlarm())
    await asyncio.sleep(0.1)
    s.store.state = "deactivated"
    await finish(s)
    assert s.attempts() == [("primary", "PJSIP/1", "cancelled")]
    assert len(s.ami.hangups) == 1
    assert "emergency_exhausted" not in s.kinds()


async def test_stop_hangs_up_the_call_in_progress_and_start_returns_at_once():
    s = setup({"PJSIP/1": "silent"}, destinations=["PJSIP/1"])
    s.ami.talk = 5.0
    # start() is a plain function (its result is used without an await): it cannot wait
    # on anything; the walk runs in a task of its own.
    assert s.caller.start(FakeAlarm())
    assert s.caller.running(1)
    assert not s.caller.start(FakeAlarm())  # one walk per alarm
    await asyncio.sleep(0.1)
    assert await s.caller.stop(1)
    assert not s.caller.running(1)
    assert len(s.ami.hangups) == 1
    assert s.attempts() == [("primary", "PJSIP/1", "cancelled")]
    assert not await s.caller.stop(1)


async def test_ami_failure_is_an_outcome_and_the_walk_goes_on():
    s = setup(
        {"PJSIP/1": "down", "PJSIP/2": "ack"},
        destinations=["PJSIP/1", "PJSIP/2"],
    )
    s.caller.start(FakeAlarm())
    await finish(s)
    assert s.attempts() == [
        ("primary", "PJSIP/1", "failed"),
        ("primary", "PJSIP/2", "acknowledged"),
    ]
    assert "AmiConnectionLost" in s.recorded[0].details["error"]


async def test_caller_id_and_channel_variables():
    s = setup({"PJSIP/1": "ack"}, destinations=["PJSIP/1"], emergency_cid_lookup=True)
    s.ami.emergency_cid = "5550199"
    s.caller.start(FakeAlarm())
    await finish(s)
    ((channel, caller_id, variables),) = s.ami.calls
    assert channel == "PJSIP/1"
    assert caller_id == '"PANIC Ward 3" <5550199>'
    assert variables["PANIC_ALARM_ID"] == "1"
    assert variables["PANIC_EMERGENCY_DEST"] == "PJSIP/1"
    assert variables["PANIC_EXTENSION"] == "201"
    assert variables["PANIC_EMERGENCY_ATTEMPT"].startswith("emergency-1-")


async def test_no_destinations_starts_nothing():
    s = setup({})
    assert not s.caller.start(FakeAlarm())
    assert not s.caller.running(1)


async def test_a_failing_hook_is_logged_not_raised(caplog):
    s = setup({"PJSIP/1": "ack"}, destinations=["PJSIP/1"])

    async def broken(alarm, by) -> None:
        raise RuntimeError("SMTP is down")

    s.caller._on_acknowledged = broken
    s.caller.start(FakeAlarm())
    await finish(s)
    assert s.attempts() == [("primary", "PJSIP/1", "acknowledged")]
    assert "emergency hook" in caplog.text


def drill_alarm(*, emergency: bool) -> Alarm:
    now = datetime.now(UTC)
    return Alarm(
        1,
        "drill:department:3",
        3,
        "Ward 3",
        "201",
        "active",
        now,
        None,
        None,
        None,
        0,
        None,
        drill=Drill(cycles=1, emergency=emergency),
    )


async def test_a_drill_is_called_for_only_when_it_says_so_and_shows_its_name() -> None:
    s = setup({"PJSIP/1": "ack"}, destinations=["PJSIP/1"])
    await s.caller.alarm_started(drill_alarm(emergency=False))
    assert not s.caller.running(1)
    await s.caller.drill_paged(drill_alarm(emergency=False))  # nothing to wait for
    assert s.ami.calls == []

    s.store.drill = True
    await s.caller.alarm_started(drill_alarm(emergency=True))
    assert s.caller.running(1)
    # The drill ends once its calls have: drill_paged returns when acknowledged.
    await asyncio.wait_for(s.caller.drill_paged(drill_alarm(emergency=True)), 5)
    await finish(s)
    [(channel, caller_id, _)] = s.ami.calls
    assert (channel, caller_id) == ("PJSIP/1", '"TEST Ward 3" <201>')
    assert s.attempts() == [("primary", "PJSIP/1", "acknowledged")]
