"""Route ``deactivate``: stopping alarms by PIN (*556).

The call, step by step (each outcome recorded in the alarm history, with the call's
uniqueid and channel):

1. Who calls (AMPUSER, else CALLERID(num)). An extension that is not an authorised
   deactivator hears a refusal: ``deactivation_refused`` (reason "not authorised").
   An extension locked out by earlier wrong PINs is refused too (reason "locked out").
2. No active alarm: the caller hears so (``deactivation_refused``, reason "no active
   alarm"), before being asked for a PIN.
3. The PIN: GET DATA, '#' ends it, at most 12 digits. A wrong PIN is recorded
   (``deactivation_failed``) and counted by the store across calls; when the count
   reaches ``pin_attempts`` the store locks the extension out for ``lockout_seconds``
   (``deactivation_locked_out``) and the call ends. Within one call the caller may try
   ``pin_attempts`` times. A right PIN clears the count. On top of that, a system-wide
   limit (``FlowSettings.global_pin_failures`` wrong PINs from any extensions within
   ``global_pin_window`` seconds, counted in the shared history) refuses every
   deactivation for ``global_lockout_seconds`` (``deactivation_locked_out`` with scope
   "global" when it starts, ``deactivation_refused`` with reason "global lockout" while
   it runs). The PIN itself is never logged,
   recorded or kept: it lives in a local variable until scrypt has checked it.
4. Which alarm: one active alarm is deactivated without asking; with several, a menu
   names their departments ("Press 1 for Emergency Room, 2 for Pharmacy, 9 for all";
   up to 8 by number, 9 for every active alarm).
5. ``service.deactivate(alarm_id, by="extension <ext>", reason="PIN", uniqueid=...)`` for
   each chosen alarm (the service records ``deactivated``, with this call's uniqueid, so
   the alarm's timeline shows this call's steps), then an acknowledgement.

PostgreSQL unavailable, at any step (it holds the PIN hashes, the lockout counts and the
alarms; the service refuses a deactivation it could not record): the caller hears that
the system cannot deactivate right now, that the alarm goes on, and to try again; the
attempt is recorded (``deactivation_refused``, reason "database unavailable", journalled
by the service until PostgreSQL takes it). Each database call waits at most
``FlowSettings.database_timeout`` seconds, so the caller is not left in silence.

Every word in the caller's language: the department of the calling extension's, else
the site's default (``alarm_settings.default_language``), else English (PostgreSQL
down), with that language's voice; the menu names departments and extensions in it too.

``FASTAGI_STATUS``: DEACTIVATED, REFUSED, LOCKED, WRONGPIN, NOALARM, NOCHOICE,
UNAVAILABLE, HANGUP or ERROR.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession
from fastagi.alarms.outage import is_unavailable
from fastagi.config import FlowSettings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import UNKNOWN_DEPARTMENT, Department
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Catalogue, Languages
from fastagi.domain.pins import MAX_PIN_LENGTH, verify_pin_async
from fastagi.flows import prompts
from fastagi.flows.common import (
    Caller,
    CallLanguage,
    Recorder,
    call_details,
    call_language,
    caller_identity,
    set_status,
)
from fastagi.flows.prompts import Speaker

__all__ = [
    "ActiveAlarm",
    "DeactivateFlow",
    "DeactivationService",
    "Deactivators",
    "PinPolicy",
    "PinPolicySource",
    "Status",
]

logger = logging.getLogger(__name__)

#: Menu keys 1..8 choose one alarm; 9 chooses all of them.
ALL_KEY = "9"
MAX_LISTED = 8
_T = TypeVar("_T")


class Status(enum.StrEnum):
    """Values of FASTAGI_STATUS after the deactivate route."""

    DEACTIVATED = "DEACTIVATED"
    REFUSED = "REFUSED"
    LOCKED = "LOCKED"
    WRONGPIN = "WRONGPIN"
    NOALARM = "NOALARM"
    NOCHOICE = "NOCHOICE"
    UNAVAILABLE = "UNAVAILABLE"  # PostgreSQL did not answer: nothing deactivated
    HANGUP = "HANGUP"
    ERROR = "ERROR"


# ---- what the flow needs from the rest of the system -----------------------------------


class PinPolicy(Protocol):
    """The part of the ``alarm_settings`` row the deactivation obeys."""

    @property
    def pin_attempts(self) -> int: ...

    @property
    def lockout_seconds(self) -> int: ...

    @property
    def default_language(self) -> str: ...


class PinPolicySource(Protocol):
    """:class:`fastagi.store.policy.PolicyStore`, as the deactivation uses it."""

    async def load_settings(self) -> PinPolicy: ...


class Deactivators(Protocol):
    """:class:`fastagi.store.deactivators.DeactivatorStore`, as the deactivation uses it."""

    async def deactivator_pin_hash(self, extension: str) -> str | None: ...

    async def lockout_until(self, extension: str) -> datetime | None: ...

    async def record_pin_failure(
        self, extension: str, max_failures: int, lockout_seconds: int
    ) -> datetime | None: ...

    async def clear_pin_failures(self, extension: str) -> object: ...

    async def global_lockout_until(
        self, max_failures: int, window_seconds: float, lockout_seconds: float
    ) -> datetime | None: ...


class ActiveAlarm(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def department_name(self) -> str: ...

    @property
    def extension(self) -> str: ...

    @property
    def is_drill(self) -> bool: ...


class DeactivationService(Protocol):
    """The part of :class:`fastagi.alarms.service.AlarmService` the deactivation uses."""

    async def lookup(self, extension: str) -> Department | None: ...

    async def active_alarms(self) -> Sequence[ActiveAlarm]: ...

    async def deactivate(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> bool: ...


# ---- the flow ----------------------------------------------------------------------------


class _Unavailable(Exception):
    """PostgreSQL did not answer a call the deactivation needs (the cause is chained)."""


class _PinOutcome(enum.Enum):
    RIGHT = "right"
    WRONG = "wrong"
    LOCKED = "locked"


@dataclass
class _Call:
    session: AgiSession
    caller: Caller
    language: CallLanguage  # English until the caller's is known
    stage: str = "start"
    policy: PinPolicy | None = None  # read with the language, when it could be
    deactivated: list[int] = field(default_factory=list)  # alarm ids, as they are

    @property
    def log_extra(self) -> dict[str, Any]:
        return {
            "agi_uniqueid": self.session.environment.uniqueid,
            "peer": self.session.peer,
            "extension": self.caller.extension,
        }


class DeactivateFlow:
    """The ``deactivate`` route. ``DeactivateFlow(service, store, tts, FlowSettings())``.

    ``service`` lists and deactivates alarms; ``policy`` gives the PIN policy;
    ``deactivators`` knows their PIN hashes and lockouts; ``record`` writes the call's
    history (the HistoryRecorder); ``tts`` renders prompts.
    """

    def __init__(
        self,
        service: DeactivationService,
        policy: PinPolicySource,
        deactivators: Deactivators,
        *,
        record: Recorder,
        tts: Speaker,
        settings: FlowSettings | None = None,
        languages: Languages | None = None,
    ) -> None:
        """``languages``: the prompt catalogues (default: the built-in ones, read now)."""
        self._service = service
        self._write = record
        self._policy = policy
        self._deactivators = deactivators
        self._tts = tts
        self._settings = settings or FlowSettings()
        self._languages = languages or load_languages(self._settings.catalogues)

    async def __call__(self, session: AgiSession) -> None:
        try:
            caller = await caller_identity(session, self._settings)
        except AgiHangup:
            await set_status(session, Status.HANGUP)
            return
        call = _Call(session, caller, call_language(self._languages, None, None))
        try:
            status = await self._run(call)
        except AgiHangup:
            logger.info("caller hung up", extra={**call.log_extra, "stage": call.stage})
            await self._record(call, EventKind.CALLER_HUNG_UP, {"stage": call.stage})
            status = Status.HANGUP
        except _Unavailable as exc:
            status = await self._unavailable(call, exc)
        except Exception as exc:
            await set_status(session, Status.ERROR)
            await self._record(
                call, EventKind.ERROR, {"stage": call.stage, "error": type(exc).__name__}
            )
            raise
        await set_status(session, status)

    async def _run(self, call: _Call) -> Status:
        admitted = await self._admit(call)
        if isinstance(admitted, Status):
            return admitted
        call.stage = "pin"
        policy = call.policy if call.policy is not None else await self._load_policy()
        outcome = await self._pin(call, admitted, policy)
        if outcome is _PinOutcome.LOCKED:
            await self._say_last(call, "locked_out", prompts.FALLBACK_LOCKED_OUT)
            return Status.LOCKED
        if outcome is _PinOutcome.WRONG:
            await self._say_last(call, "wrong_pin_final", prompts.FALLBACK_WRONG_PIN_FINAL)
            return Status.WRONGPIN
        return await self._choose_and_deactivate(call)

    async def _choose_language(self, call: _Call) -> None:
        """The caller's language, from the department the directory maps the extension
        to and the site's default (the PIN policy's row, kept for the PIN). PostgreSQL
        unreachable: _Unavailable at once, and the caller hears so in English (nothing
        could be deactivated anyway: the PIN hashes are there too)."""
        department = None
        if call.caller.known:
            department = await self._db(self._service.lookup(call.caller.extension))
        call.policy = await self._load_policy()
        call.language = call_language(self._languages, department, call.policy.default_language)

    async def _admit(self, call: _Call) -> str | Status:
        """The caller's PIN hash, or the status of a call refused before the PIN."""
        call.stage = "authorise"
        if call.caller.trusted:  # a trunk's caller is refused in English, with no read
            await self._choose_language(call)
        ext = call.caller.extension
        pin_hash = (
            await self._db(self._deactivators.deactivator_pin_hash(ext))
            if call.caller.known and call.caller.trusted
            else None
        )
        if pin_hash is None:
            reason = "not authorised" if call.caller.trusted else "untrusted caller"
            details: dict[str, Any] = {"reason": reason}
            if not call.caller.trusted:
                details.update(call.caller.seen)
            await self._record(call, EventKind.DEACTIVATION_REFUSED, details)
            await self._say_last(call, "not_authorised", prompts.FALLBACK_NOT_AUTHORISED)
            return Status.REFUSED
        locked_until = await self._db(self._deactivators.lockout_until(ext))
        if locked_until is not None and locked_until > datetime.now(UTC):
            await self._record(
                call,
                EventKind.DEACTIVATION_REFUSED,
                {"reason": "locked out", "locked_until": locked_until.isoformat()},
            )
            await self._say_last(call, "locked_out", prompts.FALLBACK_LOCKED_OUT)
            return Status.LOCKED
        global_until = await self._global_lockout_until()
        if global_until is not None:
            await self._record(
                call,
                EventKind.DEACTIVATION_REFUSED,
                {"reason": "global lockout", "locked_until": global_until.isoformat()},
            )
            await self._say_last(call, "locked_out", prompts.FALLBACK_LOCKED_OUT)
            return Status.LOCKED
        if not await self._db(self._service.active_alarms()):
            return await self._no_alarm(call)
        return pin_hash

    async def _choose_and_deactivate(self, call: _Call) -> Status:
        call.stage = "choice"
        # Read again: alarms may have started or stopped while the PIN was typed.
        alarms = sorted(await self._db(self._service.active_alarms()), key=lambda alarm: alarm.id)
        if not alarms:
            return await self._no_alarm(call)
        chosen = alarms if len(alarms) == 1 else await self._choose(call, alarms)
        if chosen is None:
            await self._say_last(call, "nothing_chosen", prompts.FALLBACK_GOODBYE)
            return Status.NOCHOICE
        call.stage = "deactivate"
        done = await self._deactivate(call, chosen)
        if not done:
            # Someone else stopped them meanwhile.
            return await self._no_alarm(call)
        if len(done) == 1:
            label = _menu_label(call.language.catalogue, done[0])
            await self._say_last(
                call, "deactivated_one", prompts.FALLBACK_DEACTIVATED, department=label
            )
        else:
            await self._say_last(call, "deactivated_all", prompts.FALLBACK_DEACTIVATED)
        return Status.DEACTIVATED

    async def _pin(self, call: _Call, pin_hash: str, policy: PinPolicy) -> _PinOutcome:
        ext = call.caller.extension
        key, fallback = "pin_prompt", prompts.FALLBACK_PIN
        for attempt in range(1, max(1, policy.pin_attempts) + 1):
            files = await prompts.files_for(
                self._tts,
                call.language.text(key),
                fallback,
                render_timeout=self._settings.render_timeout,
                voice=call.language.voice,
            )
            entered = await prompts.ask(
                call.session,
                files,
                timeout_ms=self._settings.pin_timeout_ms,
                max_digits=MAX_PIN_LENGTH,
            )
            if not entered.digits:
                # Silence is not a guess: ask again, without counting a failure.
                key, fallback = "pin_prompt", prompts.FALLBACK_PIN
                continue
            if await verify_pin_async(entered.digits, pin_hash):
                await self._db(self._deactivators.clear_pin_failures(ext))
                logger.info("PIN accepted", extra=call.log_extra)
                return _PinOutcome.RIGHT
            logger.info("wrong PIN", extra={**call.log_extra, "attempt": attempt})
            await self._record(call, EventKind.DEACTIVATION_FAILED, {"attempt": attempt})
            locked_until = await self._db(
                self._deactivators.record_pin_failure(
                    ext, policy.pin_attempts, policy.lockout_seconds
                )
            )
            if locked_until is not None:
                logger.warning("extension locked out after wrong PINs", extra=call.log_extra)
                await self._record(
                    call,
                    EventKind.DEACTIVATION_LOCKED_OUT,
                    {"locked_until": locked_until.isoformat(), "attempt": attempt},
                )
                return _PinOutcome.LOCKED
            global_until = await self._global_lockout_until()
            if global_until is not None:
                logger.warning(
                    "deactivation locked system-wide after wrong PINs", extra=call.log_extra
                )
                await self._record(
                    call,
                    EventKind.DEACTIVATION_LOCKED_OUT,
                    {
                        "scope": "global",
                        "locked_until": global_until.isoformat(),
                        "attempt": attempt,
                    },
                )
                return _PinOutcome.LOCKED
            key, fallback = "pin_wrong", prompts.FALLBACK_PIN_WRONG
        return _PinOutcome.WRONG

    async def _load_policy(self) -> PinPolicy:
        return await self._db(self._policy.load_settings())

    async def _global_lockout_until(self) -> datetime | None:
        settings = self._settings
        until = await self._db(
            self._deactivators.global_lockout_until(
                settings.global_pin_failures,
                settings.global_pin_window,
                settings.global_lockout_seconds,
            )
        )
        return until if until is not None and until > datetime.now(UTC) else None

    async def _choose(
        self, call: _Call, alarms: Sequence[ActiveAlarm]
    ) -> Sequence[ActiveAlarm] | None:
        listed = list(alarms[:MAX_LISTED])
        language = call.language
        text = " ".join(
            [
                *(
                    language.text(
                        "menu_item",
                        key=str(index),
                        department=_menu_label(language.catalogue, alarm),
                    )
                    for index, alarm in enumerate(listed, start=1)
                ),
                language.text("menu_all", key=ALL_KEY),
            ]
        )
        fallback = [
            *(
                sound
                for index, alarm in enumerate(listed, start=1)
                for sound in (
                    prompts.fallback_menu_drill(str(index))
                    if alarm.is_drill
                    else prompts.fallback_menu_item(str(index), alarm.extension)
                )
            ),
            *prompts.fallback_menu_all(ALL_KEY),
        ]
        for _ in range(self._settings.menu_attempts):
            files = await prompts.files_for(
                self._tts,
                text,
                fallback,
                render_timeout=self._settings.render_timeout,
                voice=language.voice,
            )
            result = await prompts.ask(
                call.session, files, timeout_ms=self._settings.menu_timeout_ms, max_digits=1
            )
            key = result.digits
            if key == ALL_KEY:
                return alarms
            if key.isdigit() and 1 <= int(key) <= len(listed):
                return [listed[int(key) - 1]]
            logger.info("no valid choice of alarm", extra=call.log_extra)
        return None

    async def _deactivate(self, call: _Call, chosen: Sequence[ActiveAlarm]) -> list[ActiveAlarm]:
        by = f"extension {call.caller.extension}"
        uniqueid = call.session.environment.uniqueid

        async def deactivate_all() -> list[ActiveAlarm]:
            done = []
            for alarm in chosen:
                try:
                    stopped = await self._service.deactivate(
                        alarm.id, by=by, reason="PIN", uniqueid=uniqueid
                    )
                except Exception as exc:
                    if is_unavailable(exc):
                        raise _Unavailable(repr(exc)) from exc
                    raise
                if stopped:
                    done.append(alarm)
                    call.deactivated.append(alarm.id)
            return done

        # Shielded: once the PIN is right and the choice made, the deactivation goes
        # through even if this call's task is cancelled meanwhile. Not under the database
        # deadline either: a deactivation cut short could be written all the same.
        done = await asyncio.shield(deactivate_all())
        logger.info(
            "alarms deactivated",
            extra={**call.log_extra, "alarm_ids": ",".join(str(alarm.id) for alarm in done)},
        )
        return done

    async def _db(self, call: Awaitable[_T]) -> _T:
        """A read or a PIN count in PostgreSQL, with a deadline; _Unavailable when it
        cannot be reached (a bug or bad data still raises what it raised)."""
        try:
            async with asyncio.timeout(self._settings.database_timeout):
                return await call
        except Exception as exc:
            if is_unavailable(exc):
                raise _Unavailable(repr(exc)) from exc
            raise

    async def _unavailable(self, call: _Call, exc: _Unavailable) -> Status:
        logger.error(
            "deactivation impossible: PostgreSQL unavailable",
            extra={**call.log_extra, "stage": call.stage, "error": str(exc)},
        )
        details: dict[str, Any] = {"reason": "database unavailable", "stage": call.stage}
        if call.deactivated:
            details["deactivated"] = list(call.deactivated)
        await self._record(call, EventKind.DEACTIVATION_REFUSED, details)
        await self._say_last(call, "unavailable", prompts.FALLBACK_UNAVAILABLE)
        return Status.UNAVAILABLE

    async def _no_alarm(self, call: _Call) -> Status:
        await self._record(call, EventKind.DEACTIVATION_REFUSED, {"reason": "no active alarm"})
        await self._say_last(call, "no_alarm", prompts.FALLBACK_NO_ALARM)
        return Status.NOALARM

    async def _say_last(
        self, call: _Call, key: str, fallback: Sequence[str], **values: str
    ) -> None:
        """The call's last words, the catalogue's ``key``; a hang-up during them
        changes nothing."""
        try:
            await prompts.say(
                call.session,
                self._tts,
                call.language.text(key, **values),
                fallback,
                render_timeout=self._settings.render_timeout,
                voice=call.language.voice,
            )
        except AgiHangup:
            logger.info("caller hung up during the last prompt", extra=call.log_extra)

    async def _record(self, call: _Call, kind: EventKind, details: dict[str, Any]) -> None:
        event = HistoryEvent(
            kind=kind,
            alarm_id=None,
            extension=call.caller.extension,
            department=None,
            details={"route": "deactivate", **call_details(call.session), **details},
        )
        try:
            await self._write(event)
        except Exception as exc:
            logger.error("cannot record %s", kind, extra={**call.log_extra, "error": repr(exc)})


def _menu_label(catalogue: Catalogue, alarm: ActiveAlarm) -> str:
    """How the menu names an alarm in ``catalogue``'s language: its department, or the
    caller's extension when the department is unknown (two unknown alarms must not sound
    alike), digit by digit in the language's words; a drill as one."""
    if alarm.is_drill:
        return catalogue.text("drill_label", department=alarm.department_name)
    if alarm.department_name == UNKNOWN_DEPARTMENT:
        extension = (
            catalogue.spoken_extension(alarm.extension)
            if alarm.extension.isdigit()
            else alarm.extension
        )
        return catalogue.text("unknown_label", extension=extension)
    return alarm.department_name
