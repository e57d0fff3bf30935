"""What a page of an alarm says when its caller recorded where they are (``*557``,
sql/010): the recording, after an optional spoken prefix, instead of the spoken
department and extension.

An alarm is never silent for a recording's sake: a recording whose file is missing or
unreadable (a restore without the sounds directory, a disk fault) is left out, the page
speaks the department and extension as before, and the history says why
(``recording_unusable``). A look-up that fails or does not answer within
``lookup_timeout`` (PostgreSQL away, or wedged) is the same as none: the page does not
wait on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastagi.config import RecordingSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import is_extension
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.recordings import RecordingStore
from fastagi.tts.wav import WavError, wav_seconds

__all__ = ["RecordedLocations"]

logger = logging.getLogger(__name__)

Recorder = Callable[[HistoryEvent], Awaitable[object]]

# How long a page waits for the recording's row before it speaks the announcement: the
# loop's own queries have such a bound (fastagi/alarms/outage.py); a wedged PostgreSQL
# must not hold up a page.
LOOKUP_TIMEOUT = 2.0


class RecordedLocations:
    """``RecordedLocations(store, settings, record=)``; ``await for_alarm(alarm)`` is the
    Asterisk name of the recording to page, or None (speak the announcement)."""

    def __init__(
        self,
        store: RecordingStore,
        settings: RecordingSettings,
        *,
        record: Recorder,
        lookup_timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self._store = store
        self._settings = settings
        self._record = record
        self._lookup_timeout = lookup_timeout

    @property
    def prefix(self) -> str:
        return self._settings.prefix

    async def for_alarm(self, alarm: Alarm) -> str | None:
        if alarm.drill is not None:
            return None  # a drill says it is a test, not where someone is
        extension = alarm.extension if is_extension(alarm.extension) else ""
        try:
            async with asyncio.timeout(self._lookup_timeout):
                location = await self._store.for_page(extension, alarm.department_id)
        except Exception as exc:  # TimeoutError included
            logger.warning("cannot look up the recorded location: %s", exc)
            return None
        if location is None:
            return None
        path = self._settings.directory / location.file_name
        try:
            await asyncio.to_thread(wav_seconds, path)
        except WavError as exc:
            await self._record(
                HistoryEvent(
                    kind=EventKind.RECORDING_UNUSABLE,
                    alarm_id=alarm.id,
                    extension=alarm.extension,
                    department=alarm.department_name,
                    details={
                        "owner": location.owner,
                        "file": location.file_name,
                        "error": str(exc),
                    },
                )
            )
            return None
        return self._settings.asterisk_name(location.file_name)
