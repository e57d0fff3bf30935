"""Settings of the text-to-speech service, wired into the one Settings class as ``tts``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fastagi.config import checks

# FreePBX's sounds directory is where Asterisk looks for prompts; a subdirectory of our own
# keeps our files apart from the admin's recordings and makes ``purge`` safe.
DEFAULT_DIRECTORY = Path("/var/lib/asterisk/sounds/fastagi-panic")


class TtsSettings(BaseModel):
    """Where prompts are written, and how they sound.

    Every field that changes the audio is part of a prompt's cache key, so changing the
    voice, rate, volume, level or sample rate renders fresh files instead of reusing old ones.
    """

    # A misspelt setting is an error at start-up, not a default silently used.
    model_config = ConfigDict(extra="forbid")

    # The directory as this server sees it (a host path)...
    directory: Path = DEFAULT_DIRECTORY
    # ... and as Asterisk sees it. They differ when Asterisk runs in a chroot or container
    # (the test sandbox); on FreePBX they are the same path, so None means "same".
    asterisk_directory: str | None = None
    # An espeak-ng voice id as `espeak-ng --voices` lists it ("en", "en-us", "de"); None keeps
    # espeak-ng's default voice (English).
    voice: str | None = None
    # Words per minute. espeak-ng's default is 175; a little slower is easier to follow over
    # an 8 kHz phone line, for someone who is startled.
    rate: int = Field(default=150, ge=80, le=450)
    # espeak-ng's amplitude, as pyttsx3 takes it (1.0 = espeak's default of 100). With
    # peak_dbfs set the result is normalised anyway, so this matters only without it.
    volume: float = Field(default=1.0, gt=0.0, le=2.0)
    # Peak level after normalisation, in dBFS. espeak-ng's output level varies with voice and
    # text; normalising makes every prompt as loud as the built-in sounds. None: leave as is.
    peak_dbfs: float | None = Field(default=-3.0, ge=-30.0, le=0.0)
    # 8000 -> `.sln`, 16000 -> `.sln16`: Asterisk's signed-linear formats (format_sln.c).
    # 8 kHz is what a G.711 phone hears anyway; 16 kHz helps wideband (G.722) phones only.
    sample_rate: Literal[8000, 16000] = 8000
    # A render takes about 0.1 s; a render that has not finished in this time is killed, so
    # a wedged espeak-ng never holds up the alarm, which then uses the built-in sounds.
    render_timeout: float = Field(default=10.0, gt=0.0, le=300.0)
    # Department names are typed by an admin; a cap keeps a paste accident from rendering
    # (and paging) minutes of speech.
    max_text_length: int = Field(default=500, ge=1, le=10_000)
    # Renders run as separate processes; this caps how many run at once. prerender() uses one
    # at a time, so with 2 a live call's render never queues behind a batch of departments.
    max_parallel_renders: int = Field(default=2, ge=1, le=32)

    @field_validator("asterisk_directory")
    @classmethod
    def _asterisk_directory_absolute(cls, value: str | None) -> str | None:
        return checks.asterisk_directory(value)

    @field_validator("directory")
    @classmethod
    def _directory_absolute(cls, value: Path) -> Path:
        return checks.absolute_directory(value)

    @field_validator("voice")
    @classmethod
    def _voice_plain(cls, value: str | None) -> str | None:
        # Voice ids are short names like "en-us" or "mb/mb-de1"; anything else is a typo or
        # worse, and espeak-ng would fall back to a default voice without saying so.
        if value is not None and (
            not value or len(value) > 64 or not all(c.isalnum() or c in "-_+/." for c in value)
        ):
            raise ValueError(f"not an espeak-ng voice id: {value!r}")
        return value

    def asterisk_dir(self) -> str:
        """The directory as Asterisk sees it."""
        if self.asterisk_directory is not None:
            return self.asterisk_directory
        return str(self.directory)

    def extension(self) -> str:
        """The file extension Asterisk's format_sln maps to ``sample_rate``."""
        return "sln" if self.sample_rate == 8000 else "sln16"
