"""Settings of recorded locations (``[recording]``): where the recordings live and how
``*557`` records them (fastagi/flows/record_location.py)."""

from __future__ import annotations

import posixpath
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fastagi.config import checks

# Beside the TTS directory, not inside it: TextToSpeech.purge removes every file of its
# own directory that it did not render.
DEFAULT_DIRECTORY = Path("/var/lib/asterisk/sounds/fastagi-panic-locations")
#: Where Record() writes a take before the caller keeps it (a subdirectory, so that the
#: directory's own files are only kept recordings; fastagi freepbx install creates it).
INCOMING = "incoming"


class RecordingSettings(BaseModel):
    """``[recording]``."""

    model_config = ConfigDict(extra="forbid")

    # The directory as this server sees it ...
    directory: Path = DEFAULT_DIRECTORY
    # ... and as Asterisk sees it (Record() writes there; the page plays from there).
    # None: the same path (FreePBX); they differ when Asterisk runs in a chroot.
    asterisk_directory: str | None = None
    # Record() ends after this many seconds at most ...
    max_seconds: int = Field(default=15, ge=2, le=120)
    # ... or after this many seconds of silence.
    silence_seconds: int = Field(default=3, ge=1, le=10)
    # A recording shorter than this is taken for nothing said: the caller is asked again.
    min_seconds: float = Field(default=0.5, ge=0.1, le=10.0)
    # Spoken by TTS before the recording in a page ({department}, {extension} filled in);
    # "" pages the recording alone.
    prefix: str = "Panic alarm."

    @field_validator("directory")
    @classmethod
    def _directory_absolute(cls, value: Path) -> Path:
        return checks.absolute_directory(value)

    @field_validator("asterisk_directory")
    @classmethod
    def _asterisk_directory_absolute(cls, value: str | None) -> str | None:
        return checks.asterisk_directory(value)

    @model_validator(mode="after")
    def _min_below_max(self) -> RecordingSettings:
        if self.min_seconds >= self.max_seconds:
            raise ValueError("min_seconds must be below max_seconds")
        return self

    def asterisk_dir(self) -> str:
        return self.asterisk_directory or str(self.directory)

    def asterisk_name(self, file_name: str) -> str:
        """What Playback and Page take for a recording: its path as Asterisk sees it,
        without ``.wav`` (Asterisk picks the format by the files it finds)."""
        return posixpath.join(self.asterisk_dir(), file_name.removesuffix(".wav"))
