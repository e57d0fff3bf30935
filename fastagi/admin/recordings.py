"""Recorded locations: keep, upload, delete (``*557``, ``fastagi recording``, the web
console). Each change is audited as ``config_changed``.

A recording is a WAV file (8 kHz, 16-bit, mono: what Asterisk's Record() writes and its
format_wav plays) in ``[recording] directory``. Replacing one is atomic for the page: the
new audio is moved into the directory under a new name (a rename within one file
system), then the row is switched to it in one transaction, then the old file is
removed. A page reads either the old row and file or the new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import shutil
from pathlib import Path

from fastagi.admin.audit import record_change
from fastagi.config import RecordingSettings
from fastagi.config.recording import INCOMING
from fastagi.domain.directory import is_extension
from fastagi.store import Stores
from fastagi.store._common import StoreError
from fastagi.store.recordings import RecordedLocation
from fastagi.tts import wav as tts_wav

__all__ = [
    "INCOMING",
    "RecordingError",
    "asterisk_name",
    "delete_recording",
    "incoming_asterisk_name",
    "keep_recording",
    "wav_seconds",
]


class RecordingError(StoreError):
    """Audio that cannot be kept (unreadable, wrong format, too short)."""


def wav_seconds(path: Path) -> float:
    """The length of a WAV file Asterisk can play; RecordingError otherwise."""
    try:
        return tts_wav.wav_seconds(path)
    except tts_wav.WavError as exc:
        raise RecordingError(str(exc), field="file") from exc


def asterisk_name(settings: RecordingSettings, file_name: str) -> str:
    """What Playback and Page take: the path as Asterisk sees it, without ``.wav``."""
    return settings.asterisk_name(file_name)


def incoming_asterisk_name(settings: RecordingSettings, take: str) -> str:
    """Record()'s file argument for a take (with ``.wav``: Record() takes the format from it)."""
    return posixpath.join(settings.asterisk_dir(), INCOMING, f"{take}.wav")


def incoming_path(settings: RecordingSettings, take: str) -> Path:
    return settings.directory / INCOMING / f"{take}.wav"


def prepare_directory(settings: RecordingSettings) -> None:
    """Create the directory and its incoming subdirectory (Asterisk writes into it)."""
    (settings.directory / INCOMING).mkdir(parents=True, exist_ok=True)


def _owner(extension: str | None, department: str | None) -> str:
    if (extension is None) == (department is None):
        raise RecordingError("give an extension or a department")
    if extension is not None:
        if not is_extension(extension):
            raise RecordingError(f"not an extension: {extension!r}", field="extension")
        return f"ext{extension}"
    return "dept"


def _install(settings: RecordingSettings, source: Path, stem: str, *, move: bool) -> str:
    """Put ``source`` into the directory under a new name; the name."""
    file_name = f"{stem}-{secrets.token_hex(6)}.wav"
    target = settings.directory / file_name
    if move:
        os.replace(source, target)  # incoming/ is in the directory: one file system
    else:
        scratch = settings.directory / INCOMING / f".{file_name}"
        shutil.copyfile(source, scratch)
        os.replace(scratch, target)
    target.chmod(0o644)
    return file_name


def _remove(settings: RecordingSettings, file_name: str | None) -> None:
    if file_name:
        with contextlib.suppress(FileNotFoundError):
            (settings.directory / file_name).unlink()


async def keep_recording(
    stores: Stores,
    settings: RecordingSettings,
    source: Path,
    *,
    by: str,
    extension: str | None = None,
    department: str | None = None,
    move: bool = False,
) -> RecordedLocation:
    """Make the WAV ``source`` the recording of ``extension`` or ``department``
    (``move``: a take of Record() in incoming/, moved rather than copied)."""
    stem = _owner(extension, department)
    seconds = await asyncio.to_thread(wav_seconds, source)
    if seconds < settings.min_seconds:
        raise RecordingError(
            f"the recording lasts {seconds:.1f} s, less than {settings.min_seconds} s",
            field="file",
        )
    await asyncio.to_thread(prepare_directory, settings)
    file_name = await asyncio.to_thread(_install, settings, source, stem, move=move)
    try:
        location, old = await stores.recordings.replace(
            extension=extension,
            department=department,
            file_name=file_name,
            seconds=seconds,
            recorded_by=by,
        )
    except BaseException:
        await asyncio.to_thread(_remove, settings, file_name)
        raise
    await asyncio.to_thread(_remove, settings, old)
    await record_change(
        stores,
        "recording keep",
        by=by,
        owner=location.owner,
        file=file_name,
        seconds=round(seconds, 2),
    )
    return location


async def delete_recording(
    stores: Stores,
    settings: RecordingSettings,
    *,
    by: str,
    extension: str | None = None,
    department: str | None = None,
) -> RecordedLocation:
    """Remove the recording of ``extension`` or ``department`` (the page speaks the
    department and extension again); RecordingError when there is none."""
    _owner(extension, department)
    location = await stores.recordings.delete(extension=extension, department=department)
    if location is None:
        who = f"extension {extension}" if extension is not None else f"department {department}"
        raise RecordingError(f"no recording for {who}")
    await asyncio.to_thread(_remove, settings, location.file_name)
    await record_change(stores, "recording delete", by=by, owner=location.owner)
    return location
