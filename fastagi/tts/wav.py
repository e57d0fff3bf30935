"""Reading a WAV file the way Asterisk plays it: recorded locations (sql/010)."""

from __future__ import annotations

import wave
from pathlib import Path

__all__ = ["WavError", "wav_seconds"]

#: format_wav plays 8 kHz 16-bit mono (and Record() writes it).
WAV_RATE = 8000


class WavError(ValueError):
    """Audio Asterisk cannot play as a .wav."""


def wav_seconds(path: Path) -> float:
    """The length of a WAV file Asterisk can play; WavError otherwise (missing,
    unreadable, another format). Blocking: call it in a thread."""
    try:
        with wave.open(str(path), "rb") as audio:
            rate, width, channels = audio.getframerate(), audio.getsampwidth(), audio.getnchannels()
            frames = audio.getnframes()
    except (OSError, EOFError, wave.Error) as exc:
        raise WavError(f"cannot read {path.name}: {exc}") from exc
    if (rate, width, channels) != (WAV_RATE, 2, 1):
        raise WavError(
            f"{path.name}: {rate} Hz, {8 * width}-bit, {channels} channel(s); Asterisk plays"
            " 8000 Hz 16-bit mono WAV (sox in.wav -r 8000 -b 16 -c 1 out.wav)"
        )
    return frames / rate
