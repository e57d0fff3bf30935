"""The all-clear page (``[alarm] all_clear``): once, to the alarm's phones, when it ends."""

from __future__ import annotations

from fastagi.alarms.paging import Pager
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.config import AlarmSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Speech
from fastagi.domain.rules import announcement_text
from fastagi.store.directory import DirectoryStore
from fastagi.tts import TextToSpeech, TtsError, fallback_announcement

# Page ids of all-clear pages, apart from the alarm's own cycles.
_ALL_CLEAR_CYCLE_OFFSET = 1_000_000


async def page_all_clear(
    alarm: Alarm,
    *,
    pager: Pager,
    tts: TextToSpeech | None,
    directory: DirectoryStore,
    settings: AlarmSettings,
    recorder: HistoryRecorder,
    speech: Speech | None = None,
) -> None:
    """``speech``: the department's language; English speaks ``[alarm] all_clear_text``."""
    template = settings.all_clear_text
    if speech is not None and speech.voice is not None:
        template = speech.catalogue.template("all_clear")
    text = announcement_text(template, alarm.department_name, alarm.extension)
    prompts: list[str]
    try:
        if tts is None:
            raise TtsError("no text-to-speech service")
        voice = speech.voice if speech is not None else None
        prompts = [(await tts.render(text, voice=voice)).asterisk_name]
    except TtsError:
        prompts = ["beep", *fallback_announcement(alarm.extension)[2:]]
    devices = (
        tuple(settings.unknown_department_devices)
        if alarm.department_id is None and settings.unknown_department_devices
        else await directory.paging_devices(alarm)
    )
    result = await pager.page(alarm.id, alarm.cycles + _ALL_CLEAR_CYCLE_OFFSET, devices, prompts)
    await recorder.record(
        HistoryEvent(
            EventKind.ALL_CLEAR, alarm.id, alarm.extension, alarm.department_name, result.details()
        )
    )
