"""Route ``drill``: a drill from a phone (*558, then the drill PIN and #).

Why a feature code of its own rather than ``*`` and a PIN at the trigger's question (as
Wildix does): the trigger's path stays exactly the path a person in danger takes, with no
branch that a key pressed in panic could take into a drill, and no PIN prompt between a
real trigger and its alarm; the code is one line of ``[fastagi-panic-features]`` to
change, as *555 is.

The call, step by step (each recorded, with the call's uniqueid: a started drill's
timeline shows the call):

1. Who calls, by the trigger's rule (AMPUSER, else the PJSIP endpoint; an untrusted
   caller is refused without a word). The caller's department: a drill of a department
   is what is tested; an extension of no department hears that the feature is not
   available, as does every caller while ``[drill] pin`` is unset.
2. "Enter the test PIN, followed by the hash key." (no word of a panic or an alarm: as
   discreet as the trigger). A wrong PIN: ``drill_refused`` (reason "wrong PIN"), asked
   again up to ``[drill] pin_attempts`` times. The PIN is compared in constant time and
   never recorded.
3. The drill starts (``drill_started``, fastagi/alarms/service.py) with the ``[drill]``
   cycles, devices and emergency call; "Test started." unless ``[flows] ack_on_confirm``
   is off (then the call ends without a word, as a confirmed trigger does). A real alarm
   of the department, or a drill of it running: ``drill_refused``, "A test cannot start
   now."

Every word in the caller's language (the department's, else the site's default, else
English while the directory cannot be read), with that language's voice.

``FASTAGI_STATUS``: STARTED, BUSY (an alarm or a drill runs), WRONGPIN, REFUSED (not
available here), UNAVAILABLE (PostgreSQL down: no drill), HANGUP or ERROR.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession
from fastagi.alarms.outage import is_unavailable
from fastagi.config import DrillSettings, FlowSettings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import Department, Directory
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Languages
from fastagi.domain.pins import MAX_PIN_LENGTH
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
from fastagi.store.alarms import DrillStart, DrillStartOutcome

__all__ = ["DrillFlow", "DrillService", "Status"]

logger = logging.getLogger(__name__)


class Status(enum.StrEnum):
    """Values of FASTAGI_STATUS after the drill route."""

    STARTED = "STARTED"
    BUSY = "BUSY"
    WRONGPIN = "WRONGPIN"
    REFUSED = "REFUSED"
    UNAVAILABLE = "UNAVAILABLE"
    HANGUP = "HANGUP"
    ERROR = "ERROR"


class DrillService(Protocol):
    """The part of :class:`fastagi.alarms.service.AlarmService` the drill route uses."""

    async def lookup(self, extension: str) -> Department | None: ...

    async def directory(self) -> Directory: ...  # for the site's default language

    async def start_drill(
        self,
        department: Department,
        *,
        requested_by: str,
        extension: str = "",
        uniqueid: str | None = None,
    ) -> DrillStart: ...


class DrillFlow:
    """The ``drill`` route. ``DrillFlow(service, record=, tts=, settings=, flow_settings=)``."""

    def __init__(
        self,
        service: DrillService,
        *,
        record: Recorder,
        tts: Speaker,
        settings: DrillSettings,
        flow_settings: FlowSettings | None = None,
        languages: Languages | None = None,
    ) -> None:
        """``languages``: the prompt catalogues (default: the built-in ones, read now)."""
        self._service = service
        self._write = record
        self._tts = tts
        self._settings = settings
        self._flow_settings = flow_settings or FlowSettings()
        self._languages = languages or load_languages(self._flow_settings.catalogues)
        self._english = call_language(self._languages, None, None)

    async def __call__(self, session: AgiSession) -> None:
        try:
            caller = await caller_identity(session, self._flow_settings)
        except AgiHangup:
            await set_status(session, Status.HANGUP)
            return
        language, department = self._english, None  # until the caller's are known
        try:
            if caller.trusted:  # an untrusted caller is refused without a word or a read
                department = await self._lookup(caller)
                language = await self._language(department)
            status = await self._run(session, caller, department, language)
        except AgiHangup:
            await self._record(session, caller, None, {"reason": "caller hung up"})
            status = Status.HANGUP
        except Exception as exc:
            if not is_unavailable(exc):
                await set_status(session, Status.ERROR)
                raise
            logger.error("drill impossible: PostgreSQL unavailable", extra={"error": repr(exc)})
            await self._record(session, caller, None, {"reason": "database unavailable"})
            await self._say(session, language, "drill_busy", prompts.FALLBACK_UNAVAILABLE)
            status = Status.UNAVAILABLE
        await set_status(session, status)

    async def _lookup(self, caller: Caller) -> Department | None:
        """The caller's department; None for a caller id that is no extension."""
        if not caller.known:
            return None
        return await self._service.lookup(caller.extension)

    async def _language(self, department: Department | None) -> CallLanguage:
        directory = await self._service.directory()
        return call_language(self._languages, department, directory.default_language)

    async def _run(
        self,
        session: AgiSession,
        caller: Caller,
        department: Department | None,
        language: CallLanguage,
    ) -> Status:
        if not caller.trusted:
            # As the trigger: a trunk's caller hears nothing.
            await self._record(
                session, caller, None, {"reason": "untrusted caller", **dict(caller.seen)}
            )
            return Status.REFUSED
        pin = self._settings.pin
        if pin is None or department is None:
            reason = "no drill PIN configured" if pin is None else "no department"
            await self._record(session, caller, department, {"reason": reason})
            await self._say(
                session, language, "drill_not_available", prompts.FALLBACK_NOT_AUTHORISED
            )
            return Status.REFUSED
        if not await self._pin(session, caller, department, language, pin.get_secret_value()):
            await self._say(session, language, "wrong_pin_final", prompts.FALLBACK_WRONG_PIN_FINAL)
            return Status.WRONGPIN
        started = await self._service.start_drill(
            department,
            requested_by=f"extension {caller.extension}",
            extension=caller.extension,
            uniqueid=session.environment.uniqueid,
        )
        if started.outcome is not DrillStartOutcome.STARTED:
            details: dict[str, Any] = {"reason": started.outcome.value}
            if started.alarm is not None:
                details["alarm"] = started.alarm.id
            await self._record(session, caller, department, details)
            await self._say(session, language, "drill_busy", prompts.FALLBACK_DRILL_BUSY)
            return Status.BUSY
        logger.info(
            "drill started by phone",
            extra={
                "agi_uniqueid": session.environment.uniqueid,
                "extension": caller.extension,
                "alarm_id": started.alarm.id if started.alarm else None,
            },
        )
        if self._flow_settings.ack_on_confirm:
            await self._say(session, language, "drill_started", prompts.FALLBACK_ACTIVATED)
        return Status.STARTED

    async def _pin(
        self,
        session: AgiSession,
        caller: Caller,
        department: Department,
        language: CallLanguage,
        pin: str,
    ) -> bool:
        key, fallback = "drill_pin_prompt", prompts.FALLBACK_PIN
        for attempt in range(1, self._settings.pin_attempts + 1):
            files = await prompts.files_for(
                self._tts,
                language.text(key),
                fallback,
                render_timeout=self._flow_settings.render_timeout,
                voice=language.voice,
            )
            entered = await prompts.ask(
                session,
                files,
                timeout_ms=self._flow_settings.pin_timeout_ms,
                max_digits=MAX_PIN_LENGTH,
            )
            if entered.digits and hmac.compare_digest(entered.digits.encode(), pin.encode()):
                return True
            if entered.digits:
                await self._record(
                    session, caller, department, {"reason": "wrong PIN", "attempt": attempt}
                )
            key, fallback = "drill_pin_wrong", prompts.FALLBACK_PIN_WRONG
        return False

    async def _say(
        self, session: AgiSession, language: CallLanguage, key: str, fallback: Sequence[str]
    ) -> None:
        """The call's last words, the catalogue's ``key``; a hang-up during them changes
        nothing."""
        with contextlib.suppress(AgiHangup):
            await prompts.say(
                session,
                self._tts,
                language.text(key),
                fallback,
                render_timeout=self._flow_settings.render_timeout,
                voice=language.voice,
            )

    async def _record(
        self,
        session: AgiSession,
        caller: Caller,
        department: Department | None,
        details: dict[str, Any],
    ) -> None:
        event = HistoryEvent(
            kind=EventKind.DRILL_REFUSED,
            alarm_id=None,
            extension=caller.extension,
            department=department.name if department else None,
            details={"route": "drill", **call_details(session), **details},
        )
        try:
            await self._write(event)
        except Exception as exc:
            logger.error("cannot record drill_refused", extra={"error": repr(exc)})
