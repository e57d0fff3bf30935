"""A page's announcement as pieces rendered ahead of time, and how long it plays.

Theory of operation. ``announcement_segments`` (fastagi/domain/rules.py) cuts the
announcement where it names the extension: the texts around it depend on the department
only and are rendered when the department appears (start-up, every directory reload:
fastagi/app.py ``keep_prompts_ready``); the extension is spoken from one clip per
character (``DIGIT_CLIPS`` rendered at start-up), so an alarm from an extension never
heard before plays files already on disk, and Playback joins them with '&'. Every piece is
a TextToSpeech prompt, whose cache key holds the voice and its settings: a department with
a language of its own (fastagi/domain/language.py ``Speech``) renders its own pieces with
that language's voice, and its extension from clips of the language's digit words
("jeden", "zero"), rendered once per language.

How long a department's announcement plays, and so how often it can really page.

The interval is measured from the start of one page to the start of the next, and a page
never overlaps the previous one (fastagi/domain/rules.py ``next_cycle_start``): with an
interval shorter than the page itself, pages run back to back, one per page length. The
page length is the lead-in silence plus the spoken announcement, measured on the pieces
as they are paged, in the department's language (its template, voice and digit words),
with the site's own voice settings: a piece the site's prompt directory already holds is
read there (the server renders every department's pieces ahead of time), one it lacks is
rendered into a scratch directory (nothing is installed). So the scheduled
``departments`` check, which measures every department every ``[health] interval``,
renders nothing on a running site; rendering it all each time, it would start about
1,500 espeak-ng renders every 10 s with 500 departments, and outlive its timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastagi.config import Settings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import ExtensionPattern
from fastagi.domain.language import Languages
from fastagi.domain.rules import SpokenCharacters, announcement_segments, announcement_text
from fastagi.tts.cache import Prompt, TextToSpeech
from fastagi.tts.render import TtsError

# The clips every extension of digits is spoken from, rendered before any department.
DIGIT_CLIPS = tuple("0123456789")

Segments = Sequence[str | SpokenCharacters]


def segment_texts(segments: Segments) -> list[str]:
    """The texts of ``segments`` (what a department needs rendered)."""
    return [segment for segment in segments if isinstance(segment, str)]


def department_texts(templates: Iterable[str], departments: Iterable[str | None]) -> list[str]:
    """Every text the announcements of ``templates`` need for ``departments``: render
    them as clips (``TextToSpeech.prerender(clips=...)``), as they are played."""
    return [
        text
        for department in departments
        for template in templates
        for text in segment_texts(announcement_segments(template, department, ""))
    ]


def page_clips(template: str, department: str) -> list[str]:
    """Every clip a page of ``template`` for ``department`` plays, in the site's voice:
    the department's pieces and the digit clips any extension is spoken from. What to
    render ahead (``TextToSpeech.prerender(clips=...)``) for such a page to render
    nothing; the whole announcement as one text is not what a page plays."""
    return [*department_texts([template], [department]), *DIGIT_CLIPS]


def _character(char: str, digits: Sequence[str] | None) -> str:
    """What one character of an extension is spoken from: a digit as ``digits``'s word
    (a language's), else the character itself (the site's voice reads "7" as "seven")."""
    if digits is not None and char.isascii() and char.isdigit():
        return digits[int(char)]
    return char


def _pieces(segments: Segments, digits: Sequence[str] | None = None) -> list[str]:
    """The text of each file to play, in order. Every piece is a clip (its silences
    trimmed): played one after the other, espeak-ng's pauses around each would make the
    announcement 0.6 s longer than the whole text, and the page with it."""
    pieces: list[str] = []
    for segment in segments:
        if isinstance(segment, SpokenCharacters):
            pieces += [_character(char, digits) for char in segment.characters]
        else:
            pieces.append(segment)
    return pieces


def segments_ready(
    tts: TextToSpeech,
    segments: Segments,
    *,
    voice: str | None = None,
    digits: Sequence[str] | None = None,
) -> bool:
    """Whether every file of ``segments`` is on disk: playing them renders nothing.
    ``voice`` and ``digits``: a language's (``Speech.voice``, ``Catalogue.digits``);
    None: the site's voice, reading the digits itself."""
    return all(tts.is_rendered(text, clip=True, voice=voice) for text in _pieces(segments, digits))


async def render_segments(
    tts: TextToSpeech,
    segments: Segments,
    *,
    voice: str | None = None,
    digits: Sequence[str] | None = None,
) -> list[Prompt]:
    """The prompts to play, in order; a stat per piece when all were rendered ahead, a
    render (in parallel, as the service's slots allow) of each piece that was not.
    ``voice`` and ``digits`` as for :func:`segments_ready`.

    Raises TtsError when a piece cannot be rendered (the caller pages built-in sounds).
    """
    pieces = _pieces(segments, digits)
    if not pieces:
        raise TtsError("nothing to say: the announcement is blank")
    outcomes = await asyncio.gather(
        *(tts.render(text, clip=True, voice=voice) for text in pieces), return_exceptions=True
    )
    prompts: list[Prompt] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        prompts.append(outcome)
    return prompts


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


class PiecesNotRendered(Exception):
    """A piece of the announcement is not in the site's prompt directory yet, and the
    meter was told not to render it (``render_missing=False``)."""


class AnnouncementMeter:
    """Measures announcements with the site's TTS settings: pieces the site's prompt
    directory holds are read there, the others rendered into a scratch directory."""

    def __init__(
        self,
        settings: Settings,
        languages: Languages | None = None,
        *,
        render_missing: bool = True,
    ) -> None:
        """``languages``: the prompt catalogues (default: ``[flows] catalogues``', read now).
        ``render_missing=False``: a piece the site's directory lacks raises
        PiecesNotRendered instead of being rendered (the scheduled check: while the server
        renders a new site's departments it would render each of them a second time, and
        outlive its few seconds)."""
        self._settings = settings
        self._render_missing = render_missing
        self._languages = languages or load_languages(settings.flows.catalogues)
        self._scratch = tempfile.TemporaryDirectory(prefix="fastagi-announcement-")
        tts = settings.tts.model_copy(
            update={"directory": Path(self._scratch.name), "asterisk_directory": None}
        )
        self._tts = TextToSpeech(tts)
        # Only looked up (a stat per piece), never rendered into.
        self._installed = TextToSpeech(settings.tts)

    @property
    def renders_started(self) -> int:
        """How many pieces this meter has rendered (those the site's directory lacked)."""
        return self._tts.renders_started

    async def measure(
        self, department: str, patterns: tuple[str, ...], language: str | None = None
    ) -> Announcement | None:
        """The announcement of an alarm of ``department``, in ``language`` (the code its
        pages speak: the department's, else the site's default; None: English); None
        when TTS cannot render it (the alarm would page Asterisk's built-in sounds).
        Raises PiecesNotRendered, with ``render_missing=False``, for a piece the site's
        directory lacks."""
        pieces = await self._pieces(department, patterns, language)
        if pieces is None:
            return None
        text, _prompts, seconds = pieces
        return Announcement(text, seconds)

    async def render(
        self, department: str, patterns: tuple[str, ...], language: str | None = None
    ) -> RenderedAnnouncement | None:
        """:meth:`measure`, with the audio as one file (kept until :meth:`close`; a text
        rendered before is not rendered again)."""
        pieces = await self._pieces(department, patterns, language)
        if pieces is None:
            return None
        text, prompts, seconds = pieces
        # The pieces as one file, for those who listen to it (the web console's preview):
        # signed-linear files have no header, so their bytes simply follow each other.
        stems = "/".join(prompt.host_path.stem for prompt in prompts)
        audio = (
            Path(self._scratch.name) / f"joined-{hashlib.sha256(stems.encode()).hexdigest()[:32]}"
        )
        await asyncio.to_thread(_join, [prompt.host_path for prompt in prompts], audio)
        return RenderedAnnouncement(text, seconds, audio, self._settings.tts.sample_rate)

    async def _pieces(
        self, department: str, patterns: tuple[str, ...], language: str | None
    ) -> tuple[str, list[Prompt], float] | None:
        """The announcement's text, the files its page plays (in order) and how long the
        page lasts; None when TTS cannot render one of them."""
        alarm = self._settings.alarm
        # As the page chooses (fastagi/alarms/loop.py): English is the site's template
        # in the site's voice; another language its own, with its voice and digit words.
        speech = self._languages.speech(language, alarm.announcement)
        voiced = speech.voice is not None
        extension = sample_extension(patterns)
        text = (
            speech.announcement(department, extension)
            if voiced
            else announcement_text(speech.template, department, extension)
        )
        segments = announcement_segments(speech.template, department, extension)
        pieces = _pieces(segments, speech.catalogue.digits if voiced else None)
        if not pieces:
            return None  # a blank announcement pages the built-in sounds
        try:
            prompts = await asyncio.gather(*(self._piece(piece, speech.voice) for piece in pieces))
            return text, prompts, alarm.lead_in + sum(p.seconds() for p in prompts)
        except (TtsError, OSError):
            return None

    async def _piece(self, piece: str, voice: str | None) -> Prompt:
        if self._installed.is_rendered(piece, clip=True, voice=voice):
            return self._installed.prompt_for(piece, clip=True, voice=voice)
        if not self._render_missing:
            raise PiecesNotRendered(piece)
        return await self._tts.render(piece, clip=True, voice=voice)

    async def close(self) -> None:
        await self._tts.aclose()
        self._scratch.cleanup()


def _join(parts: list[Path], destination: Path) -> None:
    """Written beside ``destination``, then renamed over it: a preview of the same
    department being read meanwhile (two requests at once) reads a whole file, the old
    or the new, never one truncated by the rewrite."""
    with tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=f".{destination.name}-", delete=False
    ) as out:
        try:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, destination)
