"""Route ``panic``: the trigger (*555, or the Custom Destination ``panic-alarm``).

The call, step by step (each recorded in the alarm history, with the call's uniqueid
and channel, by which the alarm's timeline finds it):

1. Who calls: FreePBX's AMPUSER, else CALLERID(num); the department from the directory
   (an unknown extension still raises an alarm, for "unknown department, extension N").
   ``triggered``.
2. The question, by text-to-speech (built-in sounds if that fails), naming the
   department: "Press 1 to confirm the alarm, or 2 to cancel". ``prompt_played`` each
   time. Optionally the same question as text on the phone's display. While the
   question is still being rendered the flow listens, silently: 1 or 2 pressed then is
   the answer (``confirmed`` / ``cancelled`` with ``before_prompt``, no question
   played), for a caller who knows the question and does not wait for it.
3. 1: ``confirmed``, the alarm is activated (the service records ``activated`` or
   ``retriggered``), a short acknowledgement unless discretion is configured, and the
   call ends. 2: ``cancelled``, no alarm. Another key: the question again, up to
   ``FlowSettings.invalid_key_limit`` times. Silence: the question again, up to the
   database's ``confirmation_attempts``; then ``no_answer`` and ``no_answer_policy``
   decides (``activate``: hands-free triggers cannot press anything; ``cancel``).
4. Hang-up before an answer: ``caller_hung_up``, no alarm. Once the caller confirmed,
   hanging up changes nothing: the activation is shielded from the call.

How discreetly it asks is the department's confirmation mode (else the site's,
``alarm_settings.confirmation_mode``): ``voice`` as above; ``neutral`` a question that
gives nothing away ("Service request. Press 1 to continue."); ``tone`` a beep, then the
digit; ``display`` the question as text on the phone (SendText) and silence; ``none``
no question, the alarm at once. After the answer only ``voice`` acknowledges aloud (and
``neutral`` with the catalogue's ``neutral_activated``, empty by default): whoever
stands next to the caller hears nothing more. Texts come from the catalogue of the
department's language (else the site's), rendered with that language's voice.

``FASTAGI_STATUS`` tells the dialplan: CONFIRMED, CANCELLED, NOANSWER, HANGUP or ERROR.

The activation must not depend on the database being up at the start of the call: when
the alarm settings cannot be read, the schema's defaults apply (3 attempts, activate on
no answer), and a history event that cannot be written is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastagi.agi.errors import AgiCommandFailure, AgiHangup
from fastagi.agi.session import AgiSession
from fastagi.config import FlowSettings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import UNKNOWN_DEPARTMENT, Department
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Catalogue, Languages
from fastagi.flows import prompts
from fastagi.flows.common import (
    Caller,
    Recorder,
    call_details,
    call_language,
    caller_identity,
    display_text,
    set_status,
)
from fastagi.flows.prompts import Speaker

__all__ = [
    "Activation",
    "AlarmPolicy",
    "PanicFlow",
    "PanicService",
    "PolicySource",
    "Status",
]

logger = logging.getLogger(__name__)

CONFIRM_KEY = "1"
CANCEL_KEY = "2"


class Status(enum.StrEnum):
    """Values of FASTAGI_STATUS after the panic route."""

    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    NOANSWER = "NOANSWER"
    HANGUP = "HANGUP"
    REFUSED = "REFUSED"  # an untrusted caller (a trunk): nothing asked, no alarm
    ERROR = "ERROR"


# ---- what the flow needs from the rest of the system -----------------------------------


class AlarmPolicy(Protocol):
    """The part of the ``alarm_settings`` row the trigger obeys."""

    @property
    def no_answer_policy(self) -> str: ...  # 'cancel' | 'activate'

    @property
    def confirmation_attempts(self) -> int: ...

    @property
    def confirmation_mode(self) -> str: ...  # the site's default, CONFIRMATION_MODES

    @property
    def default_language(self) -> str: ...


class PolicySource(Protocol):
    async def load_settings(self) -> AlarmPolicy: ...


class ActivatedAlarm(Protocol):
    @property
    def id(self) -> int: ...


class Activation(Protocol):
    @property
    def alarm(self) -> ActivatedAlarm: ...

    @property
    def created(self) -> bool: ...  # False: the department's alarm was re-triggered


class PanicService(Protocol):
    """The part of :class:`fastagi.alarms.service.AlarmService` the trigger uses."""

    async def lookup(self, extension: str) -> Department | None: ...

    async def activate(
        self, extension: str, department: Department | None, *, uniqueid: str
    ) -> Activation: ...


@dataclass(frozen=True)
class DefaultPolicy:
    """The schema's defaults (sql/002_alarms.sql), for when the row cannot be read."""

    no_answer_policy: str = "activate"
    confirmation_attempts: int = 3
    confirmation_mode: str = "voice"  # sql/009_language_modes.sql
    default_language: str = "en"


# ---- the flow ----------------------------------------------------------------------------


class _Answer(enum.Enum):
    CONFIRM = "confirm"
    CANCEL = "cancel"
    NONE = "none"


@dataclass
class _Call:
    """One panic call: who, where, and how the questioning went."""

    session: AgiSession
    caller: Caller
    department: Department | None
    department_name: str  # what the history and the alarm call it
    label: str  # what the prompt calls it
    mode: str = "voice"  # the confirmation mode (set once the policy is read)
    catalogue: Catalogue | None = None  # the language's texts (likewise)
    voice: str | None = None  # the language's voice; None: the site's
    prompts: int = 0
    silent: int = 0
    invalid: int = 0
    before_prompt: bool = False  # answered while the question was still being prepared

    @property
    def log_extra(self) -> dict[str, Any]:
        env = self.session.environment
        return {
            "agi_uniqueid": env.uniqueid,
            "peer": self.session.peer,
            "extension": self.caller.extension,
            "department": self.department_name,
        }


class PanicFlow:
    """The ``panic`` route. ``PanicFlow(service, policy_source, record=, tts=, settings=)``.

    ``service`` looks up departments and activates alarms; ``policy_source`` (the
    PolicyStore) gives the current confirmation policy; ``record`` writes the call's
    history (the HistoryRecorder); ``tts`` renders prompts (a TextToSpeech).
    """

    def __init__(
        self,
        service: PanicService,
        policy_source: PolicySource,
        *,
        record: Recorder,
        tts: Speaker,
        settings: FlowSettings | None = None,
        languages: Languages | None = None,
    ) -> None:
        """``languages``: the prompt catalogues (default: the built-in ones, read now)."""
        self._service = service
        self._write = record
        self._policy_source = policy_source
        self._tts = tts
        self._settings = settings or FlowSettings()
        self._languages = languages or load_languages(self._settings.catalogues)

    async def __call__(self, session: AgiSession) -> None:
        try:
            caller = await caller_identity(session, self._settings)
        except AgiHangup:
            await self._record_early_hangup(session)
            await set_status(session, Status.HANGUP)
            return
        if not caller.trusted:
            await self._refuse(session, caller)
            return
        department = await self._lookup(session, caller)
        name = UNKNOWN_DEPARTMENT if department is None else department.name
        call = _Call(session, caller, department, name, label=name)
        try:
            await self._run(call)
        except AgiHangup:
            # Only reachable before an answer: after one, hang-ups are handled in place.
            logger.info("caller hung up before answering", extra=call.log_extra)
            await self._record(
                call,
                EventKind.CALLER_HUNG_UP,
                {"prompts": call.prompts, "stage": "confirmation"},
            )
            await set_status(session, Status.HANGUP)
        except Exception as exc:
            await set_status(session, Status.ERROR)
            await self._record(call, EventKind.ERROR, {"stage": "panic", "error": repr(exc)})
            raise

    async def _run(self, call: _Call) -> None:
        # The policy before the triggered event, which says how the call will ask; the
        # question waited on the policy before as well, so the caller waits no longer.
        policy = await self._load_policy(call)
        self._choose_language_and_mode(call, policy)
        await self._record(
            call,
            EventKind.TRIGGERED,
            {
                "caller_source": call.caller.source,
                "known_extension": call.caller.known,
                "confirmation_mode": call.mode,
                "language": self._catalogue(call).code,
            },
        )
        if call.mode == "none":
            # No question at all: the alarm at once, and the call ends in silence.
            await self._record(call, EventKind.CONFIRMED, {"prompts": 0, "mode": "none"})
            await self._activate(call, trigger="confirmed")
            await set_status(call.session, Status.CONFIRMED)
            return
        if self._settings.send_text or call.mode == "display":
            await self._send_text(call)
        answer = await self._question(call, policy)
        answered = {
            "prompts": call.prompts,
            **({"before_prompt": True} if call.before_prompt else {}),
        }
        if answer is _Answer.CONFIRM:
            await self._record(call, EventKind.CONFIRMED, answered)
            await self._activate(call, trigger="confirmed")
            await set_status(call.session, Status.CONFIRMED)
            if self._settings.ack_on_confirm:
                await self._acknowledge(call, "activated", prompts.FALLBACK_ACTIVATED)
        elif answer is _Answer.CANCEL:
            await self._record(call, EventKind.CANCELLED, answered)
            await set_status(call.session, Status.CANCELLED)
            await self._acknowledge(call, "cancelled", prompts.FALLBACK_CANCELLED)
        else:
            policy_name = policy.no_answer_policy
            reason = (
                "invalid keys" if call.invalid >= self._settings.invalid_key_limit else "silence"
            )
            await self._record(
                call,
                EventKind.NO_ANSWER,
                {
                    "policy": policy_name,
                    "reason": reason,
                    "prompts": call.prompts,
                    "silent": call.silent,
                    "invalid_keys": call.invalid,
                },
            )
            if policy_name == "activate":
                await self._activate(call, trigger="no_answer")
            await set_status(call.session, Status.NOANSWER)

    def _choose_language_and_mode(self, call: _Call, policy: AlarmPolicy) -> None:
        department = call.department
        mode = department.confirmation_mode if department else None
        call.mode = mode or policy.confirmation_mode
        language = call_language(self._languages, department, policy.default_language)
        catalogue = call.catalogue = language.catalogue
        call.voice = language.voice
        if department is None:
            call.label = catalogue.text(
                "unknown_label",
                extension=catalogue.spoken_extension(call.caller.extension)
                if call.caller.known
                else call.caller.extension,
            )

    def _catalogue(self, call: _Call) -> Catalogue:
        return call.catalogue or self._languages.get(None)

    async def _prepare(self, call: _Call) -> prompts.PromptFiles | str:
        """The question's files in the call's mode, or the key pressed meanwhile."""
        if call.mode == "tone":
            return prompts.PromptFiles(prompts.TONE, rendered=False)
        if call.mode == "display":
            # Nothing to hear: GET DATA with no file waits for the key in silence.
            return prompts.PromptFiles((), rendered=False)
        catalogue = self._catalogue(call)
        fallback: Sequence[str]
        if call.mode == "neutral":
            text = catalogue.text("neutral_question")
            fallback = prompts.FALLBACK_NEUTRAL_QUESTION
        else:
            text = catalogue.text("question", department=call.label)
            fallback = prompts.FALLBACK_QUESTION
        # A caller who presses 1 while the question is still being prepared has
        # answered it: the flow listens during the render.
        return await prompts.files_listening(
            call.session,
            self._tts,
            text,
            fallback,
            render_timeout=self._settings.render_timeout,
            answers=CONFIRM_KEY + CANCEL_KEY,
            voice=call.voice,
        )

    async def _question(self, call: _Call, policy: AlarmPolicy) -> _Answer:
        attempts = max(1, policy.confirmation_attempts)
        while True:
            prepared = await self._prepare(call)
            if isinstance(prepared, str):
                call.before_prompt = True
                logger.info("answered before the question was asked", extra=call.log_extra)
                return _Answer.CONFIRM if prepared == CONFIRM_KEY else _Answer.CANCEL
            call.prompts += 1
            await self._record(
                call,
                EventKind.PROMPT_PLAYED,
                {"prompt": call.prompts, "tts": prepared.rendered, "mode": call.mode},
            )
            result = await prompts.ask(
                call.session, prepared, timeout_ms=self._settings.confirm_timeout_ms, max_digits=1
            )
            if result.digits == CONFIRM_KEY:
                return _Answer.CONFIRM
            if result.digits == CANCEL_KEY:
                return _Answer.CANCEL
            if result.digits:
                call.invalid += 1
                logger.info("invalid key at the panic prompt", extra=call.log_extra)
                if call.invalid >= self._settings.invalid_key_limit:
                    return _Answer.NONE
            else:
                # Silence, or '#' alone (GET DATA answers it as empty input).
                call.silent += 1
                if call.silent >= attempts:
                    return _Answer.NONE

    async def _activate(self, call: _Call, *, trigger: str) -> None:
        started = time.perf_counter()
        # Shielded: once decided, the alarm goes on even if this call's task is cancelled
        # (the server shutting down) while the activation is on its way.
        activation = await asyncio.shield(
            self._service.activate(
                call.caller.extension,
                call.department,
                uniqueid=call.session.environment.uniqueid,
            )
        )
        logger.info(
            "alarm activated" if activation.created else "alarm re-triggered",
            extra={
                **call.log_extra,
                "alarm_id": activation.alarm.id,
                "trigger": trigger,
                "activate_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    async def _acknowledge(self, call: _Call, key: str, fallback: Sequence[str]) -> None:
        """The acknowledgement of the call's mode: ``voice`` says ``key``'s text,
        ``neutral`` the catalogue's neutral one (empty: nothing), the others nothing."""
        catalogue = self._catalogue(call)
        if call.mode == "neutral":
            text = catalogue.text(f"neutral_{key}")
            fallback = prompts.FALLBACK_NEUTRAL_ACK
        elif call.mode == "voice":
            text = catalogue.text(key)
        else:
            return
        if text.strip():
            await self._say_after_answer(call, text, fallback)

    async def _say_after_answer(self, call: _Call, text: str, fallback: Sequence[str]) -> None:
        """An acknowledgement; the answer is already acted on, so a hang-up is fine."""
        try:
            await prompts.say(
                call.session,
                self._tts,
                text,
                fallback,
                render_timeout=self._settings.render_timeout,
                voice=call.voice,
            )
        except AgiHangup:
            # DEBUG: the usual end of a discreet call (press 1, hang up), and the history
            # already holds what was decided; at INFO it was one of a confirmed call's two
            # log lines (bench.calls panic-confirm).
            logger.debug("caller hung up during the acknowledgement", extra=call.log_extra)

    async def _send_text(self, call: _Call) -> None:
        # SENDTEXT_BODY, set with SET VARIABLE, is taken literally; an argument to
        # SendText() would be split on ',' by the dialplan parser.
        catalogue = self._catalogue(call)
        body = display_text(
            catalogue.text("neutral_display")
            if call.mode == "neutral"
            else catalogue.text("display", department=call.label)
        )
        try:
            await call.session.set_variable("SENDTEXT_BODY", body)
            await call.session.exec("SendText")
        except AgiCommandFailure as exc:
            logger.warning("SendText failed", extra={**call.log_extra, "error": str(exc)})

    async def _lookup(self, session: AgiSession, caller: Caller) -> Department | None:
        if not caller.known:
            return None
        try:
            return await self._service.lookup(caller.extension)
        except Exception as exc:
            # No directory (PostgreSQL down since start-up): an alarm of an unknown
            # department still pages someone, which beats no alarm at all.
            logger.error(
                "cannot look up the department; raising an alarm of unknown department",
                extra={
                    "agi_uniqueid": session.environment.uniqueid,
                    "extension": caller.extension,
                    "error": repr(exc),
                },
            )
            return None

    async def _load_policy(self, call: _Call) -> AlarmPolicy:
        try:
            return await self._policy_source.load_settings()
        except Exception as exc:
            logger.warning(
                "cannot read the alarm settings; using the defaults",
                extra={**call.log_extra, "error": repr(exc)},
            )
            return DefaultPolicy()

    async def _record(self, call: _Call, kind: EventKind, details: dict[str, Any]) -> None:
        event = HistoryEvent(
            kind=kind,
            alarm_id=None,
            extension=call.caller.extension,
            department=call.department_name,
            details={"route": "panic", **call_details(call.session), **details},
        )
        try:
            await self._write(event)
        except Exception as exc:
            # The alarm matters more than its history; the service journals what it can.
            logger.error("cannot record %s", kind, extra={**call.log_extra, "error": repr(exc)})

    async def _refuse(self, session: AgiSession, caller: Caller) -> None:
        """A trigger from a trunk or an endpoint that is no extension: recorded with what
        was seen, and refused without a word (FlowSettings.untrusted_caller)."""
        logger.warning(
            "panic trigger refused: untrusted caller",
            extra={"agi_uniqueid": session.environment.uniqueid, "peer": session.peer},
        )
        event = HistoryEvent(
            kind=EventKind.TRIGGER_REFUSED,
            alarm_id=None,
            extension=None,
            department=None,
            details={
                "route": "panic",
                **call_details(session),
                "reason": "untrusted caller",
                "caller_source": caller.source,
                **dict(caller.seen),
            },
        )
        try:
            await self._write(event)
        except Exception as exc:
            logger.error("cannot record trigger_refused", extra={"error": repr(exc)})
        await set_status(session, Status.REFUSED)

    async def _record_early_hangup(self, session: AgiSession) -> None:
        event = HistoryEvent(
            kind=EventKind.CALLER_HUNG_UP,
            alarm_id=None,
            extension=None,
            department=None,
            details={"route": "panic", **call_details(session), "stage": "identify"},
        )
        try:
            await self._write(event)
        except Exception as exc:
            logger.error("cannot record caller_hung_up", extra={"error": repr(exc)})
