"""Render one text to a WAV file with pyttsx3's espeak-ng driver, then exit.

Run as a script by ``render.py`` (``python -P _worker.py``), one process per render, so a
hung or crashed espeak-ng is killed with its process and never shares state with the
server. It imports nothing from fastagi, so it runs the same whether the package is
installed or not.

Protocol: one JSON object on stdin, ``{"text", "voice", "rate", "volume", "wav"}``; exit
status 0 when ``wav`` holds audio, otherwise a one-line reason on stderr and status 1.
The text travels on stdin, never argv or a shell, and pyttsx3 calls espeak_Synth without
the SSML or PHONEMES flags, so markup like ``<speak>`` or ``[[...]]`` is read out as text.
"""

from __future__ import annotations

import json
import sys
import threading
import wave
from typing import Any


class WorkerError(Exception):
    """A reason to give up, printed on stderr for the server's log."""


def main() -> int:
    try:
        render(sys.stdin.read())
    except WorkerError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def render(job_json: str) -> None:
    try:
        job = json.loads(job_json)
        text, wav_path = str(job["text"]), str(job["wav"])
        voice, rate, volume = job["voice"], int(job["rate"]), float(job["volume"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkerError(f"bad job: {exc}") from exc
    # pyttsx3's espeak driver never starts synthesis for an empty text, so the wait for its
    # end below would never return; the server rejects blank texts, this guards the worker.
    if not text.strip():
        raise WorkerError("empty text")

    try:
        import pyttsx3

        engine: Any = pyttsx3.init("espeak")
    except Exception as exc:  # pyttsx3 raises RuntimeError, OSError, ImportError...
        raise WorkerError(f"cannot start espeak-ng through pyttsx3: {exc}") from exc

    # pyttsx3 runs queued commands inside runAndWait and reports their exceptions through
    # the "error" topic only; collect them, or a bad voice would pass silently.
    errors: list[BaseException] = []
    engine.connect("error", lambda name, exception: errors.append(exception))
    # runAndWait does NOT wait for save_to_file in pyttsx3 2.99's espeak driver: espeak-ng
    # is initialised with AUDIO_OUTPUT_RETRIEVAL, which is asynchronous (synthesis runs on
    # espeak-ng's own thread), and the driver's loop ends after one 10 ms tick because the
    # queued endLoop runs before synthesis starts. The WAV is written from espeak-ng's
    # thread just before "finished-utterance"; wait for that. No timeout here: the server
    # kills this process when it takes too long.
    finished = threading.Event()
    outcome: list[bool] = []

    def on_finished(name: object, completed: bool) -> None:
        outcome.append(completed)
        finished.set()

    engine.connect("finished-utterance", on_finished)
    _never_cancel(engine)
    if voice is not None:
        engine.setProperty("voice", voice)
    engine.setProperty("rate", rate)
    engine.setProperty("volume", volume)
    engine.save_to_file(text, wav_path)
    engine.runAndWait()
    if errors:
        raise WorkerError(f"espeak-ng failed: {errors[0]}")
    finished.wait()
    if not outcome[0]:
        raise WorkerError("espeak-ng stopped before the end of the text")

    try:
        with wave.open(wav_path, "rb") as wav:
            frames = wav.getnframes()
    except (OSError, EOFError, wave.Error) as exc:
        raise WorkerError(f"espeak-ng wrote no usable WAV: {exc}") from exc
    if frames == 0:
        raise WorkerError("espeak-ng produced no audio for this text")


def _never_cancel(engine: Any) -> None:
    """Keep runAndWait from cancelling the rate, volume and voice just set.

    pyttsx3 2.99's runAndWait queues DriverProxy.endLoop behind the property commands and
    runs them in one go; endLoop calls the espeak driver's stop(), which calls espeak_Cancel
    whenever espeak_IsPlaying() is true. In espeak-ng's asynchronous mode espeak_SetParameter
    is a command queued for espeak-ng's own thread (libespeak-ng/fifo.c), and IsPlaying is
    true while that thread runs any command; Cancel then drops the commands still queued.
    The text was then spoken at pyttsx3's default rate of 200 words a minute instead of the
    configured one: 1 render in about 30, with several rendering at once. This process
    renders one text and nothing in it is ever to be stopped, so stop() does nothing.
    """
    try:
        driver = engine.proxy._driver
        driver.stop  # noqa: B018 - the attribute replaced below must exist
    except AttributeError as exc:
        raise WorkerError(f"unsupported pyttsx3 (no espeak driver stop()): {exc}") from exc
    driver.stop = lambda: None


if __name__ == "__main__":
    sys.exit(main())
