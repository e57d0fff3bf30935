"""Route ``acknowledge``: the answered emergency call (fastagi/alarms/emergency.py).

The emergency call's Originate connects the answered destination to
``[fastagi-panic-emergency]``, which calls this route with the alarm id, the attempt's id
and the destination dialled as AGI arguments (or ``?alarm=&attempt=&dest=`` in the URL).

1. The arguments are checked: the alarm id is digits only, the attempt an id of ours.
   Anything else ends the call (``INVALID``): nothing from the channel reaches a query
   but as a parameter, and nothing reaches Asterisk but our own file names.
2. The announcement (department, extension, time of the alarm) and "press 1 to
   acknowledge", by text-to-speech, else built-in sounds; repeated up to
   ``EmergencySettings.announcement_repeats`` times while no 1 is pressed. For a drill,
   the drill's announcement (``[drill] emergency_announcement``): "This is a test ...".
3. 1: the acknowledgement is recorded (``acknowledged``, with the destination, the
   channel and the attempt), "Acknowledged. Thank you." and the call ends. The first
   acknowledgement of an alarm is the one kept; a later one hears the same thanks.

``FASTAGI_STATUS``: ACKNOWLEDGED, NOACK (no 1 after every repetition), NOALARM (unknown
alarm), ENDED (the alarm was deactivated meanwhile), INVALID, HANGUP or ERROR.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession
from fastagi.alarms.emergency import EmergencySettings, emergency_announcement
from fastagi.config import DrillSettings, FlowSettings
from fastagi.flows import prompts
from fastagi.flows.common import display_text, set_status
from fastagi.flows.prompts import Speaker
from fastagi.store.emergency import AcknowledgeResult, AlarmSummary
from fastagi.tts import fallback_announcement, fallback_drill_announcement

__all__ = ["AcknowledgeFlow", "AcknowledgeService", "Status", "parse_arguments"]

logger = logging.getLogger(__name__)

ACK_KEY = "1"
#: bigserial ids: at most 19 digits.
_ALARM_ID = re.compile(r"[0-9]{1,18}")
#: EmergencyCaller's ChannelIds: emergency-<alarm>-<hex>.
_ATTEMPT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A destination is only recorded (as a query parameter), never sent back to Asterisk.
MAX_DESTINATION = 100

ENDED_TEXT = "This alarm has been deactivated. Goodbye."
#: "Urgent. Extension 2 0 1. Press 1."
FALLBACK_PRESS_1 = ("vm-press", "digits/1")
#: "Thank you."
FALLBACK_ACKNOWLEDGED = ("auth-thankyou",)
#: "De-activated." then "Goodbye."
FALLBACK_ENDED = ("de-activated", "vm-goodbye")


class Status(enum.StrEnum):
    """Values of FASTAGI_STATUS after the acknowledge route."""

    ACKNOWLEDGED = "ACKNOWLEDGED"
    NOACK = "NOACK"
    NOALARM = "NOALARM"
    ENDED = "ENDED"
    INVALID = "INVALID"
    HANGUP = "HANGUP"
    ERROR = "ERROR"


class AcknowledgeService(Protocol):
    """The part of :class:`fastagi.alarms.emergency.EmergencyCaller` the route uses."""

    async def describe(self, alarm_id: int) -> AlarmSummary | None: ...

    async def acknowledge(
        self,
        alarm_id: int,
        *,
        by: str,
        attempt: str | None = None,
        channel: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> AcknowledgeResult | None: ...


def parse_arguments(
    query: Mapping[str, str], args: tuple[str, ...]
) -> tuple[int, str | None, str] | None:
    """``(alarm_id, attempt, destination)`` from the query string or the AGI arguments,
    or None when the alarm id is not 1-18 digits or the attempt is not an id of ours."""

    def pick(name: str, index: int) -> str:
        value = query.get(name)
        if value is None and index < len(args):
            value = args[index]
        return (value or "").strip()

    alarm_text, attempt, destination = pick("alarm", 0), pick("attempt", 1), pick("dest", 2)
    if _ALARM_ID.fullmatch(alarm_text) is None:
        return None
    if attempt and _ATTEMPT.fullmatch(attempt) is None:
        return None
    destination = display_text(destination)[:MAX_DESTINATION].strip()
    return int(alarm_text), attempt or None, destination


class AcknowledgeFlow:
    """``AcknowledgeFlow(emergency_caller, tts, emergency_settings, flow_settings)``."""

    def __init__(
        self,
        service: AcknowledgeService,
        tts: Speaker,
        settings: EmergencySettings,
        flow_settings: FlowSettings | None = None,
        drill_settings: DrillSettings | None = None,
    ) -> None:
        self._service = service
        self._tts = tts
        self._settings = settings
        self._flow_settings = flow_settings or FlowSettings()
        self._drill_settings = drill_settings or DrillSettings()

    async def __call__(self, session: AgiSession) -> None:
        env = session.environment
        log_extra: dict[str, Any] = {"agi_uniqueid": env.uniqueid, "peer": session.peer}
        parsed = parse_arguments(env.query, env.args)
        if parsed is None:
            logger.warning(
                "acknowledge route called without a valid alarm id",
                extra={**log_extra, "agi_args": [display_text(a)[:40] for a in env.args]},
            )
            await set_status(session, Status.INVALID)
            return
        alarm_id, attempt, destination = parsed
        log_extra.update(alarm_id=alarm_id, attempt=attempt, destination=destination)
        try:
            status = await self._run(session, alarm_id, attempt, destination, log_extra)
        except AgiHangup:
            logger.info("emergency callee hung up", extra=log_extra)
            status = Status.HANGUP
        except Exception:
            logger.exception("acknowledge route failed", extra=log_extra)
            await set_status(session, Status.ERROR)
            raise
        await set_status(session, status)

    async def _run(
        self,
        session: AgiSession,
        alarm_id: int,
        attempt: str | None,
        destination: str,
        log_extra: dict[str, Any],
    ) -> Status:
        summary = await self._service.describe(alarm_id)
        if summary is None:
            logger.warning("acknowledge route for an unknown alarm", extra=log_extra)
            return Status.NOALARM
        render_timeout = self._flow_settings.render_timeout
        if not summary.is_active:
            await prompts.say(
                session, self._tts, ENDED_TEXT, FALLBACK_ENDED, render_timeout=render_timeout
            )
            return Status.ENDED
        settings = self._settings
        if summary.drill:
            settings = settings.model_copy(
                update={"announcement": self._drill_settings.emergency_announcement}
            )
        text = emergency_announcement(
            settings, summary.department_name, summary.extension, summary.activated_at
        )
        spoken = (
            fallback_drill_announcement()
            if summary.drill
            else fallback_announcement(summary.extension)
        )
        fallback = [*spoken, *FALLBACK_PRESS_1]
        files = await prompts.files_for(self._tts, text, fallback, render_timeout=render_timeout)
        for repeat in range(1, self._settings.announcement_repeats + 1):
            answer = await prompts.ask(
                session, files, timeout_ms=self._settings.digit_timeout_ms, max_digits=1
            )
            if answer.digits == ACK_KEY:
                await self._acknowledge(
                    session, alarm_id, attempt, destination, repeat=repeat, log_extra=log_extra
                )
                return Status.ACKNOWLEDGED
            logger.info(
                "no acknowledgement yet",
                extra={**log_extra, "repeat": repeat, "key": answer.digits or None},
            )
        return Status.NOACK

    async def _acknowledge(
        self,
        session: AgiSession,
        alarm_id: int,
        attempt: str | None,
        destination: str,
        *,
        repeat: int,
        log_extra: dict[str, Any],
    ) -> None:
        env = session.environment
        result = await self._service.acknowledge(
            alarm_id,
            # The destination dialled is who acknowledged; without it, the channel.
            by=destination or env.channel or "unknown",
            attempt=attempt,
            channel=env.channel or None,
            details={
                "uniqueid": env.uniqueid,
                "callerid": display_text(env.callerid or "")[:40] or None,
                "announcements": repeat,
            },
        )
        if result is not None and not result.first:
            logger.info(
                "alarm was acknowledged already",
                extra={**log_extra, "by": result.acknowledgement.acknowledged_by},
            )
        else:
            logger.info("alarm acknowledged", extra=log_extra)
        await prompts.say(
            session,
            self._tts,
            self._settings.acknowledged_text,
            FALLBACK_ACKNOWLEDGED,
            render_timeout=self._flow_settings.render_timeout,
        )
