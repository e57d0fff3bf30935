"""How long a department's announcement plays, and so how often it can really page.

The interval is measured from the start of one page to the start of the next, and a page
never overlaps the previous one (fastagi/domain/rules.py ``next_cycle_start``): with an
interval shorter than the page itself, pages run back to back, one per page length. The
page length is the lead-in silence plus the spoken announcement, measured by rendering
it with the site's own voice settings (into a scratch directory: nothing is installed).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastagi.config import Settings
from fastagi.domain.directory import ExtensionPattern
from fastagi.domain.rules import announcement_text
from fastagi.tts.cache import TextToSpeech
from fastagi.tts.render import TtsError

# The extension an announcement is measured with when a department has no mapping.
_SAMPLE_EXTENSION = "100"


@dataclass(frozen=True)
class Announcement:
    text: str
    seconds: float  # lead-in + speech

    def cycle(self, interval_seconds: int) -> float:
        """Seconds from one page's start to the next: the longer of the two."""
        return max(float(interval_seconds), self.seconds)


@dataclass(frozen=True)
class RenderedAnnouncement(Announcement):
    """An announcement and its audio: signed-linear 16-bit mono samples in host byte order
    at ``sample_rate`` (Asterisk's .sln/.sln16), without the lead-in's silence."""

    audio: Path
    sample_rate: int


def sample_extension(patterns: tuple[str, ...]) -> str:
    """An extension of the department (its first mapping's lowest), for the measurement:
    the spoken extension's digits are part of the announcement's length."""
    for text in patterns:
        try:
            return ExtensionPattern.parse(text).example()
        except ValueError:
            continue
    return _SAMPLE_EXTENSION


class AnnouncementMeter:
    """Renders announcements with the site's TTS settings into a scratch directory."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._scratch = tempfile.TemporaryDirectory(prefix="fastagi-announcement-")
        tts = settings.tts.model_copy(
            update={"directory": Path(self._scratch.name), "asterisk_directory": None}
        )
        self._tts = TextToSpeech(tts)

    async def measure(self, department: str, patterns: tuple[str, ...]) -> Announcement | None:
        """The announcement of an alarm of ``department``; None when TTS cannot render it
        (the alarm would page Asterisk's built-in sounds instead)."""
        return await self.render(department, patterns)

    async def render(
        self, department: str, patterns: tuple[str, ...]
    ) -> RenderedAnnouncement | None:
        """:meth:`measure`, with the rendered audio (kept until :meth:`close`; a text
        rendered before is not rendered again)."""
        alarm = self._settings.alarm
        text = announcement_text(alarm.announcement, department, sample_extension(patterns))
        try:
            prompt = await self._tts.render(text)
        except TtsError:
            return None
        return RenderedAnnouncement(
            text,
            alarm.lead_in + prompt.seconds(),
            prompt.host_path,
            self._settings.tts.sample_rate,
        )

    async def close(self) -> None:
        await self._tts.aclose()
        self._scratch.cleanup()
