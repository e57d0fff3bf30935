"""Render one text to an Asterisk signed-linear file without blocking the event loop.

Theory of operation. espeak-ng runs in a child process per render (``_worker.py``, driven
through pyttsx3), never in the server's process:

- pyttsx3 engines are not thread-safe, and its espeak driver keeps process-wide state
  (espeak_Initialize once per process, one global synth callback); a child has its own.
- espeak-ng can hang (the worker waits forever when pyttsx3 fails to write the WAV from
  espeak-ng's callback, or synthesis never reports its end) or crash in C. A thread cannot
  be killed, so a hung render in a worker thread would hold that thread, and with it every
  later render, for good; a child process is killed at ``render_timeout`` and the next
  render starts clean.
- A child costs about 70 ms (Python start-up plus espeak-ng's data), paid once per text,
  since prompts are cached (``cache.py``) and department texts are rendered ahead of time.

The event loop only awaits: the children are started and waited for in the default
executor (``_run`` says why not with the loop's own subprocesses), as are the few file
operations that can take a while (fsync, rename, cleanup).

The pipeline: worker -> WAV at espeak-ng's 22050 Hz -> sox -> raw signed-linear at the
configured rate -> ``os.replace`` into place. Asterisk's format_sln reads ``.sln`` as 8 kHz
and ``.sln16`` as 16 kHz, 16-bit, mono samples in host byte order with no header
(asterisk/formats/format_sln.c: ``exts = "sln|raw"`` and ``"sln16"``, frames of 320 and
640 bytes = 20 ms). Asterisk picks the file by name without extension and never sees the
temporary name, so it can never play a half-written file.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

from fastagi.config.tts import TtsSettings

# Bump when anything below changes how a given text sounds (sox effects, worker flags), so
# cached files of the old pipeline are not reused: the version is part of the cache key.
# 2: a render could be spoken at pyttsx3's default rate (_worker.py, _never_cancel).
FORMAT_VERSION = 2

_WORKER = Path(__file__).with_name("_worker.py")
# Scratch directories inside the prompt directory; purge() removes those a crash left.
SCRATCH_PREFIX = ".render-"
# Enough of a failing command's stderr to say why, not enough to flood a log line.
_STDERR_TAIL = 400
# Peak sample value below which a prompt counts as silent: about -50 dBFS.
_AUDIBLE = 100
# Unicode categories that are never spoken: control characters (newline, tab, NUL, ESC),
# line/paragraph separators, and lone surrogates (which cannot be encoded to UTF-8).
_BREAKS = frozenset({"Cc", "Zl", "Zp", "Cs"})


class TtsError(Exception):
    """A prompt could not be rendered; the caller falls back to Asterisk's built-in sounds."""


def spoken_text(text: str, max_length: int) -> str:
    """The text as it will be spoken, and hashed: NFC, whitespace collapsed.

    Raises TtsError for a text that is blank or longer than ``max_length`` characters.
    NFC makes a composed and a decomposed "Süd" one cache entry. Control characters become
    spaces: a NUL would cut the text short where pyttsx3 passes it to C, and none of them
    is spoken anyway. Nothing else is changed or interpreted: quotes, backslashes, ``<``,
    ``$(...)`` are all read out as written (see ``_worker.py`` for why).
    """
    normal = unicodedata.normalize("NFC", text)
    cleaned = "".join(
        " "
        if unicodedata.category(char) in _BREAKS
        # Format characters (zero-width joiners, bidi marks) carry no sound of their own.
        else ""
        if unicodedata.category(char) == "Cf"
        else char
        for char in normal
    )
    collapsed = " ".join(cleaned.split())
    if not collapsed:
        raise TtsError("nothing to say: the text is blank")
    if len(collapsed) > max_length:
        raise TtsError(
            f"text too long to speak: {len(collapsed)} characters, at most {max_length}"
            f" (tts.max_text_length); it begins {collapsed[:40]!r}"
        )
    return collapsed


async def render_file(
    text: str, settings: TtsSettings, destination: Path, *, clip: bool = False
) -> None:
    """Render ``text`` (already passed through ``spoken_text``) to ``destination``.

    ``clip``: a piece played between others (a digit of an extension): espeak-ng's silence
    before and after it is cut down to a short pause, or "2 0 1" would drag.

    The file appears complete or not at all. Raises TtsError on any failure. Bound it with
    ``asyncio.timeout``: cancellation kills whatever is still running and removes the
    scratch files.
    """
    # Inline, not in a thread: mkdir is a local syscall like stat, and a thread could still
    # be creating the directory after a cancellation, where the cleanup below cannot see it.
    workdir = _make_workdir(destination.parent)
    try:
        wav = workdir / "espeak.wav"
        raw = workdir / destination.name
        await _run_worker(text, settings, wav)
        await _run(_sox_argv(wav, raw, settings, clip=clip), what="sox")
        await asyncio.to_thread(_publish, raw, destination)
    finally:
        # Also after a timeout: the task is cancelled once, so this await still runs.
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


def _make_workdir(directory: Path) -> Path:
    # The scratch directory sits inside the prompt directory, so the final os.replace is a
    # rename within one file system (atomic), and an unwritable or full disk is found here,
    # before any process is started. Its dot-name is never a name Asterisk is asked to play.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=directory))
    except OSError as exc:
        raise TtsError(f"cannot write prompts to {directory}: {exc}") from exc


def _publish(raw: Path, destination: Path) -> None:
    try:
        if _peak(raw) < _AUDIBLE:
            # A text of punctuation only ("...") renders as a pause: nothing to hear, so
            # the caller had better use the built-in sounds.
            raise TtsError("the text renders as silence")
        with raw.open("rb+") as file:
            # Durable before it becomes visible: after a crash, the cache finds either the
            # whole file or none, never a named file with missing blocks.
            os.fsync(file.fileno())
        os.replace(raw, destination)
    except OSError as exc:
        raise TtsError(f"cannot store prompt {destination}: {exc}") from exc


def _peak(raw: Path) -> int:
    """The largest absolute sample value of a signed-linear file in host byte order."""
    data = raw.read_bytes()
    samples = array.array("h")
    samples.frombytes(data[: len(data) // 2 * 2])
    # max() and min() of an array run in C; a Python loop over 100k samples would not.
    return max(max(samples), -min(samples)) if samples else 0  # noqa: PLW3301


def _sox_argv(wav: Path, raw: Path, settings: TtsSettings, *, clip: bool = False) -> list[str]:
    # format_sln reads samples in host byte order (plain fread into frames); say so rather
    # than rely on sox's default for raw output.
    endian = "-L" if sys.byteorder == "little" else "-B"
    argv = [
        "sox",
        "-V1",  # failures only: a clipping warning is not an error
        "-D",  # no dither: the same text always gives the same bytes
        str(wav),
        "-t", "raw", "-r", str(settings.sample_rate), "-c", "1",
        "-b", "16", "-e", "signed-integer", endian,
        str(raw),
        # Resample first, then normalise, so the resampler's filter cannot push the
        # normalised peak into clipping.
        "rate", "-h", str(settings.sample_rate),
    ]  # fmt: skip
    if settings.peak_dbfs is not None:
        argv += ["gain", "-n", f"{settings.peak_dbfs:g}"]
    if clip:
        # Cut leading and (reversed) trailing silence below 0.5 % of full scale, then pad
        # with 40 ms after: a digit is about 0.43 s instead of 0.8-0.9 s,
        # and the pieces of an announcement last as long as the whole text did.
        argv += [
            "silence", "1", "0.01", "0.5%", "reverse",
            "silence", "1", "0.01", "0.5%", "reverse",
            "pad", "0", "0.04",
        ]  # fmt: skip
    return argv


async def _run_worker(text: str, settings: TtsSettings, wav: Path) -> None:
    if not sys.executable:
        raise TtsError("cannot start the espeak-ng worker: no Python interpreter path")
    # The job goes to stdin as JSON: no argv length limit, no quoting, no shell.
    job = {
        "text": text,
        "voice": settings.voice,
        "rate": settings.rate,
        "volume": settings.volume,
        "wav": str(wav),
    }
    # -P: do not put the worker's own directory (this package) first on sys.path, so our
    # module names cannot shadow anything pyttsx3 imports.
    argv = [sys.executable, "-P", str(_WORKER)]
    await _run(argv, what="espeak-ng (pyttsx3)", stdin=json.dumps(job).encode())


async def _run(argv: list[str], *, what: str, stdin: bytes | None = None) -> None:
    # The child is started and waited for by a worker thread, with the subprocess module,
    # not by the event loop (create_subprocess_exec): uvloop, which `fastagi serve` runs,
    # starts a child with fork() on the loop's thread, copying the page tables of the whole
    # server first: 5.7 ms of the loop's CPU per child at 70 MB of heap, 15 ms at 300 MB
    # (two children per render). The subprocess module starts it with vfork(), which
    # copies nothing: 0.6 ms, off the loop (python -m bench.tts_scale prints the figures).
    spawn = asyncio.ensure_future(asyncio.to_thread(_start, argv, stdin is not None))
    try:
        # Shielded: a render cancelled (timed out) while its child is being started must
        # still get the child's handle, to kill and reap it; unshielded, the cancellation
        # dropped the handle and left the worker running (seen once in 18 runs of the
        # unit suite on uvloop, a 1 ms render limit).
        process = await asyncio.shield(spawn)
    except OSError as exc:
        raise TtsError(f"cannot start {what} ({argv[0]}): {exc}") from exc
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            orphan = await spawn
            await asyncio.to_thread(_kill_and_reap, orphan)
        raise
    talk = asyncio.ensure_future(asyncio.to_thread(process.communicate, stdin))
    try:
        # Shielded too: the thread in communicate() is the one that reaps the child.
        _, stderr = await asyncio.shield(talk)
    except BaseException:
        # Timed out or cancelled: kill it; communicate() then sees EOF and reaps it, so
        # nothing is left behind.
        _kill(process)
        with contextlib.suppress(Exception):
            await talk
        raise
    if process.returncode != 0:
        reason = stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:] or "no message"
        raise TtsError(f"{what} failed with exit status {process.returncode}: {reason}")


def _start(argv: list[str], piped_stdin: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if piped_stdin else subprocess.DEVNULL,
        # pyttsx3 prints "Audio saved to ..." on stdout; nothing there is of use.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        process.kill()


def _kill_and_reap(process: subprocess.Popen[bytes]) -> None:
    _kill(process)
    process.communicate()
