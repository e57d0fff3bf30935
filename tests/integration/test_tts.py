"""Text-to-speech against the real espeak-ng and sox: no mocks, about 0.1 s per render."""

from __future__ import annotations

import array
import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
import unicodedata
import wave
from collections.abc import Awaitable
from pathlib import Path

import pytest
from pydantic import ValidationError

from fastagi.tts import (
    Prompt,
    TextToSpeech,
    TtsError,
    TtsSettings,
    fallback_announcement,
    fallback_confirmation,
    spoken_text,
)
from fastagi.tts import render as render_module

ANNOUNCEMENT = "Panic alarm. Department Emergency Room. Extension 2 0 1."
ASTERISK_VIEW = "/var/lib/asterisk/sounds/fastagi-panic"


def make_settings(directory: Path, **overrides: object) -> TtsSettings:
    # render_timeout 60 s, not the 10 s default (queueing included): these tests are
    # about what is rendered, and a loaded machine (load 100+) took longer than 10 s for
    # test_long_text_is_refused and the hostile texts. The tests of the timeout pass
    # their own.
    return TtsSettings.model_validate(
        {
            "directory": directory,
            "asterisk_directory": ASTERISK_VIEW,
            "render_timeout": 60,
            **overrides,
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> TtsSettings:
    return make_settings(tmp_path / "prompts")


@pytest.fixture
async def tts(settings: TtsSettings):
    async with TextToSpeech(settings) as service:
        yield service


def samples_of(prompt: Prompt) -> array.array[int]:
    # .sln/.sln16 are host-order 16-bit samples with no header (asterisk formats/format_sln.c).
    samples = array.array("h")
    samples.frombytes(prompt.host_path.read_bytes())
    return samples


def rms_dbfs(samples: array.array[int]) -> float:
    mean_square = sum(sample * sample for sample in samples) / len(samples)
    return 10 * math.log10(mean_square / 32768**2) if mean_square else -math.inf


def scratch_entries(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.name.startswith("."))


def live_children() -> set[str]:
    # Linux lists each thread's children in /proc; a killed and reaped render leaves none.
    # Compare with a snapshot: session fixtures (PostgreSQL, Asterisk) are children too.
    children: set[str] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            children |= set((task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended since the listing (the executor's come and go)
    return children


@pytest.mark.parametrize(("sample_rate", "extension"), [(8000, "sln"), (16000, "sln16")])
async def test_render_writes_audible_signed_linear(tmp_path: Path, sample_rate, extension):
    settings = make_settings(tmp_path / "prompts", sample_rate=sample_rate)
    async with TextToSpeech(settings) as tts:
        prompt = await tts.render(ANNOUNCEMENT)

    assert prompt.host_path.parent == settings.directory
    assert prompt.host_path.suffix == f".{extension}"
    stem = prompt.host_path.name.removesuffix(f".{extension}")
    # Asterisk gets its own view of the directory and the name without extension.
    assert prompt.asterisk_name == f"{ASTERISK_VIEW}/{stem}"
    size = prompt.host_path.stat().st_size
    assert size % 2 == 0
    seconds = size / (2 * sample_rate)
    assert 1.5 < seconds < 10, seconds  # ten words at 150 words per minute, about 4 s
    samples = samples_of(prompt)
    # Normalised to a -3 dBFS peak; speech sits some 10-20 dB below its peak.
    assert 0.6 * 32768 < max(abs(sample) for sample in samples) < 0.8 * 32768
    assert rms_dbfs(samples) > -30
    assert scratch_entries(settings.directory) == []


async def test_cache_hit_does_not_render_again(settings: TtsSettings, tts: TextToSpeech):
    started = time.perf_counter()
    first = await tts.render(ANNOUNCEMENT)
    render_seconds = time.perf_counter() - started
    mtime = first.host_path.stat().st_mtime_ns
    started = time.perf_counter()
    second = await tts.render(ANNOUNCEMENT)
    hit_seconds = time.perf_counter() - started

    assert second == first
    assert tts.renders_started == 1
    assert first.host_path.stat().st_mtime_ns == mtime
    # A hit is a stat, no child process: far below the render it saves (hundreds of ms).
    assert hit_seconds < render_seconds / 4, (hit_seconds, render_seconds)

    # After a restart the file on disk is the cache.
    async with TextToSpeech(settings) as restarted:
        assert await restarted.render(ANNOUNCEMENT) == first
        assert restarted.renders_started == 0


async def test_empty_file_is_rendered_again(tts: TextToSpeech):
    prompt = tts.prompt_for(ANNOUNCEMENT)
    prompt.host_path.parent.mkdir(parents=True)
    prompt.host_path.write_bytes(b"")

    assert await tts.render(ANNOUNCEMENT) == prompt
    assert tts.renders_started == 1
    assert prompt.host_path.stat().st_size > 0


async def test_concurrent_renders_of_one_text_render_once(tts: TextToSpeech):
    prompts = await asyncio.gather(*(tts.render(ANNOUNCEMENT) for _ in range(10)))

    assert len(set(prompts)) == 1
    assert tts.renders_started == 1


def test_cache_key_follows_sound_not_spelling(tmp_path: Path):
    tts = TextToSpeech(make_settings(tmp_path))
    decomposed = unicodedata.normalize("NFD", "Notaufnahme Süd")

    assert tts.prompt_for(decomposed) == tts.prompt_for("  Notaufnahme\n Süd ")
    assert tts.prompt_for("Notaufnahme Süd") != tts.prompt_for("Notaufnahme Nord")
    base = tts.prompt_for("Notaufnahme Süd").host_path.stem
    for change in ({"rate": 170}, {"voice": "de"}, {"volume": 0.8}, {"peak_dbfs": None}):
        other = TextToSpeech(make_settings(tmp_path, **change))
        assert other.prompt_for("Notaufnahme Süd").host_path.stem != base, change


def test_one_text_as_a_clip_or_in_a_voice_is_another_prompt_in_either_order(tmp_path: Path):
    # TextToSpeech remembers each text's name: what it remembers for the text must not
    # answer for its clip or its other voice, whichever was asked first.
    fresh = TextToSpeech(make_settings(tmp_path)).prompt_for
    asked_first = TextToSpeech(make_settings(tmp_path))
    for clip, voice in [(False, None), (True, None), (False, "pl"), (True, "pl")]:
        assert asked_first.prompt_for("Izba przyjęć", clip=clip, voice=voice) == fresh(
            "Izba przyjęć", clip=clip, voice=voice
        )
    names = {
        asked_first.prompt_for("Izba przyjęć", clip=clip, voice=voice)
        for clip in (False, True)
        for voice in (None, "pl")
    }
    assert len(names) == 4


async def test_hostile_texts_are_spoken_literally(tmp_path: Path):
    marker = tmp_path / "executed"
    texts = [
        "Department \"Cardiology\" & 'ICU'",
        "Ward C:\\temp\\new \\\\ share",
        "Line one\nline two\r\n\tline three",
        "Notaufnahme Süd",
        "<speak><break time='10s'/>Radiology</speak>",
        "[[h@l'oU]] Oncology",
        f"$(touch {marker}) `touch {marker}`; touch {marker} | Pharmacy",
        "Kinder\x00station\x1b[31m 3 \u200bOst",
        "Urgence Hôpital Æble 🚨",
    ]
    settings = make_settings(tmp_path / "prompts", max_parallel_renders=4)
    async with TextToSpeech(settings) as tts:
        prompts = await asyncio.gather(*(tts.render(text) for text in texts))

    assert len(set(prompts)) == len(texts)
    for text, prompt in zip(texts, prompts, strict=True):
        samples = samples_of(prompt)
        assert len(samples) / settings.sample_rate > 0.5, text
        assert rms_dbfs(samples) > -30, text
    assert not marker.exists()


def test_text_is_cleaned_not_interpreted():
    assert spoken_text(" a\n\tb\x00c\u200bd ", 100) == "a b cd"
    assert spoken_text("<speak>$(x)</speak>", 100) == "<speak>$(x)</speak>"


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00\x1b"])
async def test_blank_text_is_refused(tts: TextToSpeech, text):
    with pytest.raises(TtsError, match="blank"):
        await tts.render(text)
    assert tts.renders_started == 0


async def test_long_text_is_refused(tmp_path: Path):
    async with TextToSpeech(make_settings(tmp_path, max_text_length=50)) as tts:
        await tts.render("x" * 25 + " " + "y" * 24)  # 50 characters: fine
        with pytest.raises(TtsError, match="too long to speak: 51 characters, at most 50"):
            await tts.render("x" * 51)
        assert tts.renders_started == 1


async def test_silent_text_is_an_error(tts: TextToSpeech):
    with pytest.raises(TtsError, match="silence"):
        await tts.render("...")
    assert not tts.prompt_for("...").host_path.exists()


async def test_unwritable_directory_is_an_error(tmp_path: Path):
    # Tests run as root, which ignores permission bits; a path through a regular file
    # cannot be created by anyone.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    async with TextToSpeech(make_settings(blocker / "prompts")) as tts:
        with pytest.raises(TtsError, match=r"cannot write prompts to .*/not-a-directory/prompts"):
            await tts.render(ANNOUNCEMENT)


async def test_unknown_voice_is_an_error(tmp_path: Path):
    async with TextToSpeech(make_settings(tmp_path, voice="xx-nonexistent")) as tts:
        with pytest.raises(TtsError, match="espeak-ng failed: SetVoiceByName"):
            await tts.render(ANNOUNCEMENT)


# Runs the worker's render() in a child with espeak-ng reported busy (espeak_IsPlaying),
# as it is while its thread still applies the rate and volume just set; whether that
# happens at the moment pyttsx3 ends its loop is a race (1 render in 30-120 lost its rate).
_WORKER_WITH_ESPEAK_BUSY = """
import importlib.util, json, sys
import pyttsx3.drivers._espeak as espeak
cancels = []
real_cancel = espeak.Cancel
espeak.IsPlaying = lambda: 1
espeak.Cancel = lambda: cancels.append(1) or real_cancel()
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
worker.render(sys.stdin.read())
print(json.dumps({"cancels": len(cancels)}))
"""


def test_a_render_never_cancels_the_rate_it_set(tmp_path: Path):
    worker = Path(render_module.__file__).with_name("_worker.py")

    def frames(wav: Path, *argv: str) -> tuple[int, str]:
        job = {"text": ANNOUNCEMENT, "voice": None, "rate": 120, "volume": 1.0, "wav": str(wav)}
        done = subprocess.run(
            [sys.executable, "-P", *argv],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        with wave.open(str(wav), "rb") as audio:
            return audio.getnframes(), done.stdout

    plain, _ = frames(tmp_path / "plain.wav", str(worker))
    busy, report = frames(tmp_path / "busy.wav", "-c", _WORKER_WITH_ESPEAK_BUSY, str(worker))
    # espeak_Cancel drops the queued rate: the text is then spoken at pyttsx3's default.
    assert json.loads(report.splitlines()[-1]) == {"cancels": 0}
    assert busy == plain


# 1 ms ends the render while the worker is being started, 30 ms while it runs (Python alone
# takes longer than that to start): both must kill and reap it.
@pytest.mark.parametrize("limit", [0.001, 0.03])
async def test_timeout_kills_the_render_and_the_next_one_works(settings, tts, limit):
    children = live_children()
    with pytest.raises(TtsError, match="killed"):
        await tts.render(ANNOUNCEMENT, timeout=limit)
    assert not tts.prompt_for(ANNOUNCEMENT).host_path.exists()
    assert live_children() <= children
    assert scratch_entries(settings.directory) == []

    prompt = await tts.render(ANNOUNCEMENT)
    assert prompt.host_path.stat().st_size > 0
    assert tts.renders_started == 2


async def test_a_caller_giving_up_does_not_stop_the_render(tts: TextToSpeech):
    caller = asyncio.create_task(tts.render(ANNOUNCEMENT))
    await asyncio.sleep(0)  # let it start the render
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    # The render carries on; the next caller joins it instead of starting another.
    assert (await tts.render(ANNOUNCEMENT)).host_path.stat().st_size > 0
    assert tts.renders_started == 1


def render_children(*programs: bytes) -> dict[int, int]:
    """Our children running one of ``programs`` right now (a word of the command line
    ends with it), each with the thread that started it: /proc lists a child under its
    parent thread's task."""
    started_by = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # the thread is gone
        for pid in children:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # reaped meanwhile
            if any(word.endswith(programs) for word in command):
                started_by[int(pid)] = int(task.name)
    return started_by


async def children_seen_during(
    work: Awaitable[object], *programs: bytes, every: float
) -> dict[int, int]:
    """``render_children(*programs)`` gathered every ``every`` seconds while ``work`` runs."""
    seen: dict[int, int] = {}
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            seen.update(render_children(*programs))
            await asyncio.sleep(every)

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        stop.set()
        await ticker
    return seen


async def render_each(tts: TextToSpeech, texts: list[str], *, clip: bool = False) -> None:
    for text in texts:
        await tts.render(text, clip=clip)


async def test_event_loop_keeps_running_during_renders(tmp_path: Path):
    """While each render's worker runs, the loop runs other tasks: a ticker sees it.

    A render that blocked the loop (a synchronous subprocess call) would let the ticker
    run only before and after each worker, never during one. What the ticker saw is
    counted, not how long it waited between ticks: that measures how long a loaded
    machine keeps the process off the CPU (a 142 ms gap failed a 131 ms bound once).
    """
    texts = [
        f"Panic alarm. Department {department}. Extension 2 0 1."
        for department in ("Cardiology", "Radiology", "Oncology")
    ]
    async with TextToSpeech(make_settings(tmp_path)) as tts:
        seen_running = await children_seen_during(
            render_each(tts, texts), b"_worker.py", every=0.005
        )

    assert tts.renders_started == 3
    assert len(seen_running) == 3  # one worker per render, each seen while it ran


async def test_renders_start_their_children_off_the_event_loops_thread(tmp_path: Path):
    """A child started on the loop's thread costs the loop a fork() of the whole server
    under uvloop (create_subprocess_exec; fastagi/tts/render.py ``_run``): every child of
    a render is started by another thread."""
    loop_thread = threading.get_native_id()
    texts = [f"Panic alarm. Department {name}." for name in ("Cardiology", "Radiology", "Oncology")]
    async with TextToSpeech(make_settings(tmp_path)) as tts:
        seen = await children_seen_during(
            render_each(tts, texts, clip=True), b"_worker.py", b"sox", every=0.002
        )

    assert len(seen) >= 3  # at least each render's worker, seen while it ran
    assert loop_thread not in seen.values()


async def test_prerender_reports_each_text(tmp_path: Path):
    async with TextToSpeech(make_settings(tmp_path)) as tts:
        results = await tts.prerender(["Department Cardiology", "...", "Department Cardiology"])

    assert list(results) == ["Department Cardiology", "..."]
    assert isinstance(results["Department Cardiology"], Prompt)
    assert isinstance(results["..."], TtsError)
    assert tts.renders_started == 2


async def test_purge_keeps_only_the_given_texts(tmp_path: Path, tts: TextToSpeech):
    keep = await tts.render("Department Cardiology")
    drop = await tts.render("Department Radiology")
    foreign = tts.settings.directory / "custom-greeting.sln"
    foreign.write_bytes(b"\x00\x01")
    stale = tts.settings.directory / ".render-leftover"
    stale.mkdir()
    os.utime(stale, (0, 0))

    assert await tts.purge({"Department Cardiology"}) == 1
    assert keep.host_path.exists()
    assert not drop.host_path.exists()
    assert foreign.exists()
    assert not stale.exists()


async def test_closed_service_refuses_and_stops_renders(settings: TtsSettings):
    children = live_children()
    tts = TextToSpeech(settings)
    caller = asyncio.create_task(tts.render(ANNOUNCEMENT))
    await asyncio.sleep(0)
    await tts.aclose()

    with pytest.raises(TtsError, match="closed during the render"):
        await caller
    with pytest.raises(TtsError, match="closed"):
        await tts.render(ANNOUNCEMENT)
    assert live_children() <= children


def test_settings_reject_ambiguous_paths_and_voices(tmp_path: Path):
    with pytest.raises(ValidationError, match="must be absolute"):
        TtsSettings(directory=tmp_path, asterisk_directory="sounds/fastagi")
    with pytest.raises(ValidationError, match="not an espeak-ng voice"):
        TtsSettings(directory=tmp_path, voice="en; rm -rf /")
    with pytest.raises(ValidationError):
        TtsSettings.model_validate({"sample_rate": 44100})
    same = TtsSettings(directory=tmp_path)
    assert same.asterisk_dir() == str(tmp_path)
    assert same.extension() == "sln"


def test_fallback_announcement_spells_the_extension():
    assert fallback_announcement("201") == [
        "ascending-2tone",
        "vm-Urgent",
        "extension",
        "digits/2",
        "digits/0",
        "digits/1",
    ]
    # Only names Asterisk has: unknown characters are skipped, never passed through.
    assert fallback_announcement("*9a;/../x")[3:] == [
        "digits/star",
        "digits/9",
        "letters/a",
        "letters/slash",
        "letters/dot",
        "letters/dot",
        "letters/slash",
        "letters/x",
    ]


# The sandbox image's `en` is an absolute symlink into its /etc/alternatives, which does not
# resolve from outside the chroot, so name Debian's real directory.
SOUND_DIRECTORIES = [
    Path(__file__).parents[2] / ".cache/sandbox/rootfs/usr/share/asterisk/sounds/en_US_f_Allison",
    Path("/usr/share/asterisk/sounds/en"),
    Path("/var/lib/asterisk/sounds/en"),
]


def test_fallback_sounds_exist_in_asterisk_core_sounds():
    directory = next((path for path in SOUND_DIRECTORIES if path.is_dir()), None)
    if directory is None:
        pytest.skip("no Asterisk core sounds installed here")
    names = {*fallback_announcement("0123456789*#abc-."), *fallback_confirmation()}
    missing = [name for name in names if not list(directory.glob(f"{name}.*"))]
    assert missing == []
