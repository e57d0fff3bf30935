"""Route ``record-location``: a staff member records where they are (*557), paged instead
of the spoken department and extension when they raise an alarm (issue 13, part 3).

The call, step by step:

1. Who calls, by the trigger's rule (AMPUSER, else the PJSIP endpoint). Only an
   extension of the directory (one with a department) may record: an untrusted or
   unknown caller hears "This feature is not available."
2. The instruction, then Record() after its beep, ending on '#', after
   ``[recording] silence_seconds`` of silence or after ``max_seconds``. The take goes
   to ``<directory>/incoming/`` (Asterisk writes it there, as it sees the directory).
   A take shorter than ``min_seconds`` (the caller said nothing) is not offered: "Nothing
   was recorded.", and the instruction again.
3. The take is played back, then: 1 keeps it (it replaces the extension's recording
   atomically: fastagi/admin/recordings.py), 2 records again, 3 deletes the recording
   the extension has (the take is dropped). At most ``_TAKES`` takes and ``_MENU_TRIES``
   unanswered menus: then the call ends and nothing changes.

A take never kept is removed when the call ends, however it ends.

``FASTAGI_STATUS``: KEPT, DELETED, UNCHANGED, REFUSED, UNAVAILABLE (PostgreSQL down),
HANGUP or ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fastagi.admin.recordings import (
    RecordingError,
    delete_recording,
    incoming_asterisk_name,
    incoming_path,
    keep_recording,
    prepare_directory,
    wav_seconds,
)
from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession
from fastagi.alarms.outage import is_unavailable
from fastagi.config import FlowSettings, RecordingSettings
from fastagi.domain.directory import Department
from fastagi.flows import prompts
from fastagi.flows.common import Caller, caller_identity, set_status
from fastagi.flows.prompts import PromptFiles, Speaker
from fastagi.store import Stores

__all__ = ["RecordLocationFlow", "Status"]

logger = logging.getLogger(__name__)

# Takes per call, and menus left unanswered before the call ends with nothing changed.
_TAKES = 3
_MENU_TRIES = 2
_MENU_TIMEOUT_MS = 5000
_TAKE_NAME = re.compile(r"[^A-Za-z0-9_-]")


class Status(enum.StrEnum):
    KEPT = "KEPT"
    DELETED = "DELETED"
    UNCHANGED = "UNCHANGED"
    REFUSED = "REFUSED"
    UNAVAILABLE = "UNAVAILABLE"
    HANGUP = "HANGUP"
    ERROR = "ERROR"


class DirectoryLookup(Protocol):
    """The part of :class:`fastagi.alarms.service.AlarmService` the route uses."""

    async def lookup(self, extension: str) -> Department | None: ...


class RecordLocationFlow:
    """``RecordLocationFlow(directory, stores, tts=, settings=, flow_settings=)``."""

    def __init__(
        self,
        directory: DirectoryLookup,
        stores: Stores,
        *,
        tts: Speaker,
        settings: RecordingSettings,
        flow_settings: FlowSettings | None = None,
    ) -> None:
        self._directory = directory
        self._stores = stores
        self._tts = tts
        self._settings = settings
        self._flow_settings = flow_settings or FlowSettings()

    async def __call__(self, session: AgiSession) -> None:
        takes: list[Path] = []
        try:
            caller = await caller_identity(session, self._flow_settings)
            status = await self._run(session, caller, takes)
        except AgiHangup:
            status = Status.HANGUP
        except Exception as exc:
            if not is_unavailable(exc):
                await set_status(session, Status.ERROR)
                raise
            logger.error("recording impossible: PostgreSQL unavailable", extra={"error": repr(exc)})
            await self._say(session, prompts.DRILL_NOT_AVAILABLE, prompts.FALLBACK_UNAVAILABLE)
            status = Status.UNAVAILABLE
        finally:
            await asyncio.to_thread(_remove_all, takes)
        await set_status(session, status)

    async def _run(self, session: AgiSession, caller: Caller, takes: list[Path]) -> Status:
        department = (
            await self._directory.lookup(caller.extension)
            if caller.trusted and caller.known
            else None
        )
        if department is None:
            logger.info("recorded location refused", extra={"extension": caller.extension})
            await self._say(session, prompts.DRILL_NOT_AVAILABLE, prompts.FALLBACK_NOT_AUTHORISED)
            return Status.REFUSED
        await asyncio.to_thread(prepare_directory, self._settings)
        take_stem = _TAKE_NAME.sub("_", session.environment.uniqueid) or "take"
        for number in range(1, _TAKES + 1):
            take = f"{take_stem}-{number}"
            takes.append(incoming_path(self._settings, take))
            seconds = await self._record(session, take)
            if seconds is None:
                await self._say(session, prompts.RECORD_NOTHING, prompts.FALLBACK_RECORD_NOTHING)
                continue
            choice = await self._review(session, take)
            if choice == "1":
                await keep_recording(
                    self._stores,
                    self._settings,
                    takes[-1],
                    by=f"extension {caller.extension}",
                    extension=caller.extension,
                    move=True,
                )
                logger.info(
                    "location recorded",
                    extra={"extension": caller.extension, "seconds": round(seconds, 2)},
                )
                await self._say(session, prompts.RECORD_KEPT, prompts.FALLBACK_RECORD_KEPT)
                return Status.KEPT
            if choice == "3":
                with contextlib.suppress(RecordingError):  # none to delete: deleted all the same
                    await delete_recording(
                        self._stores,
                        self._settings,
                        by=f"extension {caller.extension}",
                        extension=caller.extension,
                    )
                await self._say(session, prompts.RECORD_DELETED, prompts.FALLBACK_RECORD_DELETED)
                return Status.DELETED
            if choice != "2":
                return Status.UNCHANGED
        return Status.UNCHANGED

    async def _record(self, session: AgiSession, take: str) -> float | None:
        """The instruction, then one take; its length, or None when nothing was said."""
        await self._play(session, prompts.RECORD_INSTRUCTION, prompts.FALLBACK_RECORD_INSTRUCTION)
        # Record(file.wav,silence,maxduration): the beep, then until '#', silence or the cap.
        # EXEC returns -1 when the caller hangs up (the take is then discarded by Record).
        argument = (
            f"{incoming_asterisk_name(self._settings, take)},"
            f"{self._settings.silence_seconds},{self._settings.max_seconds}"
        )
        if await session.exec("Record", argument) < 0:
            session.hung_up = True
            raise AgiHangup("Record returned -1 (hangup)", command="EXEC Record")
        try:
            seconds = await asyncio.to_thread(wav_seconds, incoming_path(self._settings, take))
        except RecordingError as exc:
            logger.warning("take unreadable", extra={"error": str(exc)})
            return None
        return seconds if seconds >= self._settings.min_seconds else None

    async def _review(self, session: AgiSession, take: str) -> str | None:
        """Play the take back, then ask 1 / 2 / 3; the key, or None after no answer."""
        you_said = await self._files(prompts.RECORD_YOU_SAID, ())
        recorded = incoming_asterisk_name(self._settings, take).removesuffix(".wav")
        await prompts.play(session, PromptFiles((*you_said.files, recorded), you_said.rendered))
        menu = await self._files(prompts.RECORD_MENU, prompts.FALLBACK_RECORD_MENU)
        for _ in range(_MENU_TRIES):
            answer = await prompts.ask(session, menu, timeout_ms=_MENU_TIMEOUT_MS, max_digits=1)
            if answer.digits in {"1", "2", "3"}:
                return answer.digits
        return None

    async def _files(self, text: str, fallback: Sequence[str]) -> PromptFiles:
        return await prompts.files_for(
            self._tts, text, fallback, render_timeout=self._flow_settings.render_timeout
        )

    async def _play(self, session: AgiSession, text: str, fallback: Sequence[str]) -> None:
        await prompts.play(session, await self._files(text, fallback))

    async def _say(self, session: AgiSession, text: str, fallback: Sequence[str]) -> None:
        """The call's last words; a hang-up during them changes nothing."""
        with contextlib.suppress(AgiHangup):
            await self._play(session, text, fallback)


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
