"""The emergency call: a responder is called for each new alarm until one acknowledges.

Theory of operation. :meth:`EmergencyCaller.start` only creates a task and returns: the
calls run beside the paging loop and never delay it. The task walks the configured
``destinations`` in order, ``rounds`` times. Each attempt is one AMI ``Originate``
(``Async``) of the destination's dial string (``PJSIP/150``, a ring group or an outbound
number as ``Local/...@context``), with our own ``ChannelId``, connected once answered to
``[fastagi-panic-emergency]`` (extensions_custom.conf), which runs the ``acknowledge``
route: the announcement, "press 1 to acknowledge", repeated up to a limit.

- Not answered, busy, congested or failed (``OriginateResponse`` reason 0/1/3/5/8): the
  next destination at once; ``round_pause`` seconds between rounds.
- Answered: the task waits until the call ends (AMI ``Hangup`` of our ChannelId) or the
  alarm is acknowledged. Answered but no key pressed counts as not reached.
- Every attempt is one ``emergency_call`` history event with its reason.

The acknowledgement lives in PostgreSQL (``alarm_acknowledgements``), written by the
``acknowledge`` flow of whichever server took the call. A flow of this server wakes the
task at once (:meth:`EmergencyCaller.acknowledge`); otherwise the task reads the row every
``poll_interval`` seconds, and the same read stops it when the alarm was deactivated
somewhere without :meth:`EmergencyCaller.stop` being called here.

Escalation: when nobody has acknowledged ``ack_timeout`` seconds after start (or sooner,
when the first list is exhausted: nobody is left who could), the ``escalated`` event is
recorded, the ``on_escalated(alarm)`` hook runs (e-mail, SMS) and the
``escalation_destinations`` are walked the same way, beside what remains of the first
list. An acknowledgement ends both walks, hangs up every other call in progress and runs
``on_acknowledged(alarm, by)``; :meth:`stop` (the alarm's deactivation) hangs up the
calls in progress. Hooks run in tasks of their own: a slow SMTP server delays no call.

A drill (fastagi/domain/drill.py) is called for only when it says so (``--with-emergency``
or ``[drill] emergency``), shows the drill's caller name, and its responder hears the
drill's announcement (fastagi/flows/acknowledge.py); the drill waits for its walk to end
before it ends itself (:meth:`EmergencyCaller.drill_paged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from fastagi.ami import AmiActionError, AmiError, Message, OriginateReason, OriginateResult
from fastagi.ami.framing import FieldValue
from fastagi.ami.routing import EventRouter, EventSource
from fastagi.config import EmergencySettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import UNKNOWN_DEPARTMENT
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.emergency import Acknowledgement, AcknowledgeResult, AlarmSummary

__all__ = [
    "Attempt",
    "EmergencyCaller",
    "EmergencySettings",
    "Outcome",
    "attempt_plan",
    "caller_id_for",
    "classify",
    "emergency_announcement",
]

logger = logging.getLogger(__name__)

_NUMBER_CHARACTERS = frozenset("0123456789+*#")
# How long stop() waits for the task to end after hanging up its calls.
_STOP_GRACE = 5.0
# Hanging up by ChannelId right after the Originate was written may come before
# Asterisk has made the channel: try again a few times.
_HANGUP_TRIES = 5
_HANGUP_RETRY_DELAY = 0.2
# After a failed Originate, how long to wait for the channel's Hangup event and its cause.
_CAUSE_WAIT = 1.0


# ---- pure rules ------------------------------------------------------------------------


ListName = Literal["primary", "escalation"]


@dataclass(frozen=True)
class Attempt:
    """One call to place: which list, which round, which position in the list."""

    list_name: ListName
    round: int  # 1-based
    position: int  # 1-based within the list
    destination: str


def attempt_plan(destinations: Sequence[str], rounds: int, list_name: ListName) -> list[Attempt]:
    """Every call of one list, in order: each destination once per round."""
    return [
        Attempt(list_name, round_number, position, destination)
        for round_number in range(1, rounds + 1)
        for position, destination in enumerate(destinations, start=1)
    ]


class Outcome(enum.StrEnum):
    """What became of one attempt."""

    ACKNOWLEDGED = "acknowledged"  # answered, and the alarm is acknowledged
    NOT_ACKNOWLEDGED = "not_acknowledged"  # answered, hung up without the key
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    REJECTED = "rejected"  # hung up / declined before answering
    FAILED = "failed"  # no channel, or Asterisk refused the Originate
    CANCELLED = "cancelled"  # stop(), or acknowledged by another call meanwhile

    @property
    def reached(self) -> bool:
        return self is Outcome.ACKNOWLEDGED


def classify(result: OriginateResult, hangup_cause: int | None = None) -> Outcome:
    """The outcome of an Originate, from its Reason and, when the Reason says only
    "failed" or "hung up", the ``Cause`` of the channel's ``Hangup`` event.

    Asterisk 22 answers a callee's ``486 Busy Here`` with Reason 0, not 5 (seen in the
    sandbox): the busy is only in the channel's hangup cause, 17.
    """
    if result.answered:
        return Outcome.NOT_ACKNOWLEDGED
    outcome = _REASON_OUTCOMES.get(result.reason)
    if outcome is not None:
        return outcome
    by_cause = _CAUSE_OUTCOMES.get(hangup_cause) if hangup_cause is not None else None
    if by_cause is not None:
        return by_cause
    return Outcome.REJECTED if result.reason == OriginateReason.HANGUP else Outcome.FAILED


# OriginateResponse's Reasons that say what happened.
_REASON_OUTCOMES: dict[int, Outcome] = {
    OriginateReason.NO_ANSWER: Outcome.NO_ANSWER,
    OriginateReason.BUSY: Outcome.BUSY,
    OriginateReason.CONGESTION: Outcome.CONGESTION,
}
# Hangup causes (include/asterisk/causes.h, Q.850) for the Reasons that do not.
_CAUSE_OUTCOMES: dict[int, Outcome] = {
    17: Outcome.BUSY,  # AST_CAUSE_USER_BUSY (SIP 486, 600)
    18: Outcome.NO_ANSWER,  # AST_CAUSE_NO_USER_RESPONSE (SIP 408)
    19: Outcome.NO_ANSWER,  # AST_CAUSE_NO_ANSWER (SIP 480)
    21: Outcome.REJECTED,  # AST_CAUSE_CALL_REJECTED (SIP 403, 603)
    27: Outcome.CONGESTION,  # AST_CAUSE_DESTINATION_OUT_OF_ORDER (SIP 502)
    34: Outcome.CONGESTION,  # AST_CAUSE_NORMAL_CIRCUIT_CONGESTION
    38: Outcome.CONGESTION,  # AST_CAUSE_NETWORK_OUT_OF_ORDER (SIP 500)
    41: Outcome.CONGESTION,  # AST_CAUSE_NORMAL_TEMPORARY_FAILURE (SIP 503)
    42: Outcome.CONGESTION,  # AST_CAUSE_SWITCH_CONGESTION
}


def caller_id_for(
    settings: EmergencySettings,
    department: str | None,
    extension: str,
    emergency_cid: str | None = None,
) -> str:
    """The CallerID of an emergency Originate: ``"PANIC Ward 3" <201>``."""
    if settings.caller_id_mode == "fixed":
        return settings.caller_id_fixed.strip()
    name = settings.caller_id_name.format(
        department=department or UNKNOWN_DEPARTMENT, extension=extension, time=""
    )
    # A number is digits (and + * #): FreePBX's emergency CID when it is one, else the
    # extension; a caller id that was text is shown by name only.
    candidates = ((emergency_cid or "").strip(), extension.strip())
    number = next((c for c in candidates if c and set(c) <= _NUMBER_CHARACTERS), "")
    # ast_callerid_parse reads "name" <number>; quotes and angle brackets in the name
    # would end it early, so they are dropped rather than escaped.
    name = "".join(char for char in name if char not in '"<>\\')
    return f'"{name}" <{number}>' if number else f'"{name}"'


def emergency_announcement(
    settings: EmergencySettings, department: str | None, extension: str, activated_at: datetime
) -> str:
    """What the answered call says, with the activation time in the server's local time."""
    return settings.announcement.format(
        department=department or UNKNOWN_DEPARTMENT,
        extension=extension,
        time=activated_at.astimezone().strftime(settings.time_format),
    )


# ---- what the caller needs from the rest of the system -----------------------------------


def _uniqueid(event: Message) -> str | None:
    return event.get("Uniqueid")


class EmergencyAmi(EventSource, Protocol):
    """The part of :class:`fastagi.ami.AmiClient` the emergency call uses."""

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
        timeout_ms: int = 30000,
        channel_id: str | None = None,
    ) -> OriginateResult: ...

    async def hangup(self, channel: str, *, cause: int | None = None) -> bool: ...

    async def action_list(
        self, name: str, /, *, reply_timeout: float | None = None, **fields: FieldValue
    ) -> list[Message]: ...


class EmergencyStoreLike(Protocol):
    """The part of :class:`fastagi.store.emergency.EmergencyStore` the caller uses."""

    async def alarm_summary(self, alarm_id: int) -> AlarmSummary | None: ...

    async def acknowledge(
        self,
        alarm_id: int,
        *,
        by: str,
        attempt: str | None,
        channel: str | None,
        event: HistoryEvent,
    ) -> AcknowledgeResult | None: ...


class AlarmLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def department_name(self) -> str: ...

    @property
    def extension(self) -> str: ...


Recorder = Callable[[HistoryEvent], Awaitable[object]]
EscalatedHook = Callable[[AlarmLike], Awaitable[object]]
AcknowledgedHook = Callable[[AlarmLike, str], Awaitable[object]]


# ---- the caller --------------------------------------------------------------------------


@dataclass
class _Call:
    """One attempt in flight."""

    attempt: Attempt
    channel_id: str
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    hangup_cause: int | None = None


@dataclass
class _Run:
    """The emergency calls of one alarm."""

    alarm: AlarmLike
    acknowledged: asyncio.Event = field(default_factory=asyncio.Event)
    acknowledgement: Acknowledgement | None = None
    calls: dict[str, _Call] = field(default_factory=dict)  # channel_id -> call
    outcomes: list[tuple[Attempt, Outcome]] = field(default_factory=list)
    escalated: bool = False
    task: asyncio.Task[None] | None = None


class EmergencyCaller:
    """Emergency calls for alarms: ``start(alarm)`` on activation, ``stop(id)`` on its end.

    ``record`` appends history events (``HistoryRecorder.record``: kept and retried when
    PostgreSQL is away). ``on_escalated(alarm)`` and ``on_acknowledged(alarm, by)`` are
    the notifiers' hooks; their exceptions are logged, never raised into a walk.
    """

    def __init__(
        self,
        ami: EmergencyAmi,
        store: EmergencyStoreLike,
        settings: EmergencySettings,
        *,
        record: Recorder,
        instance_id: str = "",
        on_escalated: EscalatedHook | None = None,
        on_acknowledged: AcknowledgedHook | None = None,
        drill_caller_name: str = "TEST {department}",
    ) -> None:
        """``drill_caller_name``: the caller id name of a drill's calls (``[drill]
        caller_name``)."""
        self._ami = ami
        self._drill_caller_name = drill_caller_name
        self._store = store
        self._settings = settings
        self._record = record
        self._instance_id = instance_id
        self._on_escalated = on_escalated
        self._on_acknowledged = on_acknowledged
        self._runs: dict[int, _Run] = {}
        # Every call in flight, of every alarm, told of its Hangup by its channel id (its
        # Uniqueid), among the Hangups of every call on the PBX.
        self._hangups = EventRouter(ami, _uniqueid, "Hangup")
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def settings(self) -> EmergencySettings:
        return self._settings

    # -- life cycle ----------------------------------------------------------------------

    def start(self, alarm: AlarmLike) -> bool:
        """Start calling for ``alarm`` in the background; returns at once.

        False when nothing is started: no destinations configured, the caller is closed,
        or the alarm's calls run already. An alarm acknowledged before (a server taking
        over another's alarm) is noticed by the task, which then places no call.
        """
        if self._closed or not self._settings.enabled or alarm.id in self._runs:
            return False
        run = _Run(alarm)
        self._runs[alarm.id] = run
        run.task = asyncio.create_task(self._run(run), name=f"emergency-{alarm.id}")
        run.task.add_done_callback(lambda _task: self._forget(run))
        return True

    def running(self, alarm_id: int) -> bool:
        return alarm_id in self._runs

    async def wait(self, alarm_id: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait for the alarm's calls to end; True if they did (or none ran)."""
        run = self._runs.get(alarm_id)
        if run is None or run.task is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(run.task)
        except TimeoutError:
            return False
        return True

    async def stop(self, alarm_id: int) -> bool:
        """End the alarm's calls (its deactivation): hang up the call in progress.

        False when no calls ran for it.
        """
        run = self._runs.get(alarm_id)
        if run is None or run.task is None:
            return False
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(_STOP_GRACE):
                await asyncio.shield(run.task)
        # The walk hangs up its own call when cancelled; this covers a call whose
        # cancellation came before its channel existed.
        await self._hang_up_all(run)
        return True

    # -- as an AlarmListener of the alarm service ---------------------------------------

    async def alarm_started(self, alarm: Alarm) -> None:
        if alarm.drill is not None and not alarm.drill.emergency:
            return  # a drill calls only when it says so
        self.start(alarm)

    async def alarm_ended(self, alarm: Alarm) -> None:
        await self.stop(alarm.id)

    async def drill_paged(self, alarm: Alarm) -> None:
        """A drill paged its cycles: it ends once its calls have (acknowledged, or every
        destination tried); the service bounds the wait."""
        await self.wait(alarm.id)

    async def close(self) -> None:
        """Shutdown: end every walk and wait for the hooks already running."""
        self._closed = True
        await asyncio.gather(*(self.stop(alarm_id) for alarm_id in list(self._runs)))
        if self._background:
            await asyncio.wait(self._background, timeout=_STOP_GRACE)

    # -- what the acknowledge flow uses --------------------------------------------------

    async def describe(self, alarm_id: int) -> AlarmSummary | None:
        """The alarm, for the announcement; None when unknown."""
        return await self._store.alarm_summary(alarm_id)

    async def acknowledge(
        self,
        alarm_id: int,
        *,
        by: str,
        attempt: str | None = None,
        channel: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> AcknowledgeResult | None:
        """Record that ``by`` (the destination called) acknowledged the alarm.

        The first acknowledgement is stored with its ``acknowledged`` event; later ones
        return the first and write nothing. A walk of this server stops at once; one of
        another server at its next poll. None when the alarm is unknown.
        """
        summary = await self._store.alarm_summary(alarm_id)
        if summary is None:
            return None
        event = HistoryEvent(
            EventKind.ACKNOWLEDGED,
            alarm_id,
            summary.extension,
            summary.department_name,
            {
                "by": by,
                "attempt": attempt,
                "channel": channel,
                "instance": self._instance_id,
                **(details or {}),
            },
        )
        result = await self._store.acknowledge(
            alarm_id, by=by, attempt=attempt, channel=channel, event=event
        )
        run = self._runs.get(alarm_id)
        if result is not None and run is not None:
            self._acknowledged(run, result.acknowledgement)
        return result

    # -- the walk ------------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        settings = self._settings
        alarm = run.alarm
        try:
            summary = await self._store.alarm_summary(alarm.id)
        except Exception as exc:
            # Call anyway: an alarm is never left without its emergency call because the
            # database hiccuped.
            logger.warning("cannot read alarm %s before calling: %s", alarm.id, exc)
            summary = None
        if summary is not None and summary.acknowledgement is not None:
            logger.info("alarm %s is acknowledged already: no emergency call", alarm.id)
            return
        if summary is not None and not summary.is_active:
            return
        caller_id = await self._caller_id(alarm, drill=summary is not None and summary.drill)
        plan = attempt_plan(settings.destinations, settings.rounds, "primary")
        primary = asyncio.create_task(self._walk(run, plan, caller_id))
        escalation = asyncio.create_task(self._escalate_when_due(run, primary, caller_id))
        poll = asyncio.create_task(self._poll(run))
        acknowledged = asyncio.create_task(run.acknowledged.wait())
        walks = asyncio.gather(primary, escalation, return_exceptions=True)
        tasks: list[asyncio.Future[Any]] = [primary, escalation, poll, acknowledged, walks]
        try:
            first: set[asyncio.Future[Any]] = {walks, acknowledged, poll}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if run.acknowledged.is_set():
                # Let the walks see it: the acknowledging attempt records its outcome,
                # the other calls are being hung up.
                await asyncio.wait({walks}, timeout=_STOP_GRACE)
            elif walks.done():
                for failure in walks.result():
                    if isinstance(failure, Exception):
                        logger.error("emergency walk of alarm %s failed: %r", alarm.id, failure)
                await self._record_event(
                    EventKind.EMERGENCY_EXHAUSTED,
                    alarm,
                    {
                        "attempts": len(run.outcomes),
                        "escalated": run.escalated,
                        "instance": self._instance_id,
                    },
                )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._hang_up_all(run)

    async def _escalate_when_due(
        self, run: _Run, primary: asyncio.Task[None], caller_id: str
    ) -> None:
        """Escalate after ``ack_timeout``, or once the first list is exhausted."""
        settings = self._settings
        # A failed first walk is the primary task's to report; it still escalates here.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.ack_timeout):
                await asyncio.shield(primary)
        if run.acknowledged.is_set():
            return
        run.escalated = True
        logger.warning("alarm %s: no acknowledgement; escalating", run.alarm.id)
        await self._record_event(
            EventKind.ESCALATED,
            run.alarm,
            {
                "after_attempts": len(run.outcomes),
                "first_list_exhausted": primary.done(),
                "destinations": list(settings.escalation_destinations),
                "instance": self._instance_id,
            },
        )
        self._spawn_hook(self._on_escalated, run.alarm)
        plan = attempt_plan(
            settings.escalation_destinations, settings.escalation_rounds, "escalation"
        )
        await self._walk(run, plan, caller_id)

    async def _walk(self, run: _Run, plan: Sequence[Attempt], caller_id: str) -> None:
        previous_round = 1
        for attempt in plan:
            if run.acknowledged.is_set():
                return
            if attempt.round != previous_round and self._settings.round_pause > 0:
                await asyncio.sleep(self._settings.round_pause)
            previous_round = attempt.round
            outcome = await self._attempt(run, attempt, caller_id)
            if outcome.reached or run.acknowledged.is_set():
                return

    async def _attempt(self, run: _Run, attempt: Attempt, caller_id: str) -> Outcome:
        settings = self._settings
        alarm = run.alarm
        loop = asyncio.get_running_loop()
        started = loop.time()
        call = _Call(attempt, f"emergency-{alarm.id}-{uuid.uuid4().hex[:12]}")
        run.calls[call.channel_id] = call
        result: OriginateResult | None = None
        error: str | None = None
        outcome = Outcome.CANCELLED
        # Who is being called now (the console shows it), recorded beside the call, not
        # before it: a slow database must not delay an emergency call.
        self._spawn(
            self._record_event(
                EventKind.EMERGENCY_DIALLING,
                alarm,
                {
                    "list": attempt.list_name,
                    "round": attempt.round,
                    "position": attempt.position,
                    "destination": attempt.destination,
                    "attempt": call.channel_id,
                    "instance": self._instance_id,
                },
            )
        )
        # Listening before the Originate, or a quick Hangup could be missed.
        self._hangups.add(call.channel_id, functools.partial(self._on_hangup, call))
        try:
            try:
                result = await self._ami.originate(
                    attempt.destination,
                    context=settings.context,
                    exten="s",
                    variables={
                        "PANIC_ALARM_ID": str(alarm.id),
                        "PANIC_EMERGENCY_ATTEMPT": call.channel_id,
                        "PANIC_EMERGENCY_DEST": attempt.destination,
                        "PANIC_EXTENSION": alarm.extension,
                    },
                    caller_id=caller_id,
                    timeout_ms=settings.ring_timeout * 1000,
                    channel_id=call.channel_id,
                )
            except AmiError as exc:
                error = f"{type(exc).__name__}: {exc}"
                outcome = Outcome.FAILED
            else:
                if not result.answered:
                    outcome = await self._not_answered(call, result)
                else:
                    outcome = await self._answered(run, call)
        except asyncio.CancelledError:
            ack = run.acknowledgement
            acknowledged_here = ack is not None and ack.attempt == call.channel_id
            outcome = Outcome.ACKNOWLEDGED if acknowledged_here else Outcome.CANCELLED
            raise
        finally:
            self._hangups.discard(call.channel_id)
            if outcome is Outcome.CANCELLED or outcome is Outcome.NOT_ACKNOWLEDGED:
                # Still ringing or still talking: end it (never the acknowledging call).
                self._spawn(self._hang_up(call))
            run.calls.pop(call.channel_id, None)
            run.outcomes.append((attempt, outcome))
            await self._record_attempt(
                run, call, outcome, result=result, error=error, duration=loop.time() - started
            )
        return outcome

    async def _answered(self, run: _Run, call: _Call) -> Outcome:
        """Wait for the answered call to end or the alarm to be acknowledged."""
        acknowledged = asyncio.ensure_future(run.acknowledged.wait())
        hung_up = asyncio.ensure_future(call.hung_up.wait())
        try:
            await asyncio.wait(
                {acknowledged, hung_up},
                timeout=self._settings.max_call_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            acknowledged.cancel()
            hung_up.cancel()
        if not run.acknowledged.is_set() and call.hung_up.is_set():
            # The flow writes before the call ends; this server's flow has woken us
            # already, another server's is in the row.
            await self._check(run)
        if run.acknowledged.is_set():
            ack = run.acknowledgement
            if ack is None or ack.attempt in {None, call.channel_id}:
                return Outcome.ACKNOWLEDGED
            return Outcome.CANCELLED  # another call was acknowledged meanwhile
        if not call.hung_up.is_set():
            logger.warning(
                "emergency call %s lasted more than %g s: hung up",
                call.channel_id,
                self._settings.max_call_seconds,
            )
        return Outcome.NOT_ACKNOWLEDGED

    async def _not_answered(self, call: _Call, result: OriginateResult) -> Outcome:
        outcome = classify(result)
        if outcome in {Outcome.FAILED, Outcome.REJECTED} and result.uniqueid is not None:
            # The channel's Hangup event (its cause) may follow the OriginateResponse.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CAUSE_WAIT):
                    await call.hung_up.wait()
            outcome = classify(result, call.hangup_cause)
        return outcome

    def _on_hangup(self, call: _Call, event: Message) -> None:
        if call.hung_up.is_set():
            return
        with contextlib.suppress(ValueError):
            call.hangup_cause = int(event.get("Cause", ""))
        call.hung_up.set()

    async def _poll(self, run: _Run) -> None:
        """Read the acknowledgement (and the alarm's state) every ``poll_interval``.

        Returns when the alarm is no longer active: the walk then ends.
        """
        while True:
            await asyncio.sleep(self._settings.poll_interval)
            if await self._check(run) is False:
                logger.info("alarm %s ended: no more emergency calls", run.alarm.id)
                return

    async def _check(self, run: _Run) -> bool | None:
        """Read the row: True while the alarm is active, False once it is not, None when
        PostgreSQL cannot say. An acknowledgement found wakes the walk."""
        try:
            summary = await self._store.alarm_summary(run.alarm.id)
        except Exception as exc:
            logger.warning("cannot read alarm %s: %s", run.alarm.id, exc)
            return None
        if summary is None:
            return False
        if summary.acknowledgement is not None:
            self._acknowledged(run, summary.acknowledgement)
        return summary.is_active

    def _acknowledged(self, run: _Run, ack: Acknowledgement) -> None:
        if run.acknowledged.is_set():
            return
        run.acknowledgement = ack
        run.acknowledged.set()
        # Every other call (the other list's, ringing) ends now.
        for call in list(run.calls.values()):
            if call.channel_id != ack.attempt:
                self._spawn(self._hang_up(call))
        self._spawn_hook(self._on_acknowledged, run.alarm, ack.acknowledged_by)

    async def _caller_id(self, alarm: AlarmLike, *, drill: bool = False) -> str:
        settings = self._settings
        if drill:
            settings = settings.model_copy(update={"caller_id_name": self._drill_caller_name})
        emergency_cid = None
        if settings.caller_id_mode == "extension" and settings.emergency_cid_lookup:
            emergency_cid = await self._emergency_cid(alarm.extension)
        return caller_id_for(settings, alarm.department_name, alarm.extension, emergency_cid)

    async def _emergency_cid(self, extension: str) -> str | None:
        """FreePBX's emergency CID of ``extension`` from astdb, or None."""
        if not extension.isdigit():
            return None
        settings = self._settings
        try:
            messages = await self._ami.action_list(
                "DBGet",
                Family=settings.emergency_cid_family,
                Key=settings.emergency_cid_key.format(extension=extension),
            )
        except AmiActionError:
            return None  # "Database entry not found"
        except AmiError as exc:
            logger.warning("cannot read the emergency CID of %s: %s", extension, exc)
            return None
        for message in messages:
            if message.event == "DBGetResponse":
                return message.get("Val") or None
        return None

    # -- hanging up ----------------------------------------------------------------------

    async def _hang_up(self, call: _Call) -> None:
        for _ in range(_HANGUP_TRIES):
            if call.hung_up.is_set():
                return
            try:
                # main/manager.c finds a channel by name or by uniqueid (our ChannelId).
                if await self._ami.hangup(call.channel_id):
                    return
            except AmiError as exc:
                logger.warning("cannot hang up emergency call %s: %s", call.channel_id, exc)
                return
            await asyncio.sleep(_HANGUP_RETRY_DELAY)

    async def _hang_up_all(self, run: _Run) -> None:
        await asyncio.gather(*(self._hang_up(call) for call in list(run.calls.values())))

    # -- history and hooks ---------------------------------------------------------------

    async def _record_attempt(
        self,
        run: _Run,
        call: _Call,
        outcome: Outcome,
        *,
        result: OriginateResult | None,
        error: str | None,
        duration: float,
    ) -> None:
        attempt = call.attempt
        details: dict[str, object] = {
            "list": attempt.list_name,
            "round": attempt.round,
            "position": attempt.position,
            "destination": attempt.destination,
            "outcome": str(outcome),
            "attempt": call.channel_id,
            "duration": round(duration, 3),
            "instance": self._instance_id,
        }
        if result is not None:
            details["reason"] = result.reason
            details["reason_name"] = result.reason_name
            details["answered"] = result.answered
        if call.hangup_cause is not None:
            details["hangup_cause"] = call.hangup_cause
        if error is not None:
            details["error"] = error[:500]
        await self._record_event(EventKind.EMERGENCY_CALL, run.alarm, details)

    async def _record_event(
        self, kind: EventKind, alarm: AlarmLike, details: Mapping[str, object]
    ) -> None:
        event = HistoryEvent(kind, alarm.id, alarm.extension, alarm.department_name, details)
        try:
            await self._record(event)
        except Exception:
            logger.exception("cannot record %s of alarm %s", kind, alarm.id)

    def _spawn_hook(self, hook: Callable[..., Awaitable[object]] | None, *args: Any) -> None:
        if hook is None:
            return

        async def call() -> None:
            try:
                await hook(*args)
            except Exception:
                logger.exception("emergency hook %s failed", getattr(hook, "__name__", hook))

        self._spawn(call())

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        async def run() -> None:
            await coroutine

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, run: _Run) -> None:
        if self._runs.get(run.alarm.id) is run:
            del self._runs[run.alarm.id]
