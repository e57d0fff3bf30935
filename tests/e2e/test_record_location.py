"""Recorded locations end to end (issue 13, part 3): a SIPp desk phone dials *557 and
"speaks" (it streams a tone as RTP: SIPp's ``rtp_stream``), the sandbox Asterisk's
Record() saves it, the caller keeps it with 1; the file is in the recordings directory
with the length Record() gave it, and the next alarm from that extension pages it
instead of the spoken announcement.

Desk phone 187 and paging phone 287 are this file's.
"""

from __future__ import annotations

import array
import asyncio
import math
import wave
from pathlib import Path

import asyncpg
import pytest

from fastagi.app import running_server
from fastagi.config import (
    AlarmSettings,
    RecordingSettings,
    Settings,
)
from fastagi.flows import prompts
from fastagi.store import Stores
from fastagi.store.history import StoredEvent
from fastagi.tts import TextToSpeech
from fastagi.tts.wav import wav_seconds
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.settings import recording_settings, server_settings, tts_settings
from tests import sipp

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEPARTMENT = "Recording Ward"
DESK = 187
PHONE = 287
MAX_SECONDS = 3


def ulaw(sample: int) -> int:
    """G.711 u-law of one 16-bit sample (ITU-T G.711, the bias-and-segment encoder)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone(seconds: float, frequency: float = 440.0, amplitude: int = 8000) -> bytes:
    """A voice for the phone's microphone: never below Record()'s silence threshold."""
    return bytes(
        ulaw(int(amplitude * math.sin(2 * math.pi * frequency * n / 8000)))
        for n in range(int(8000 * seconds))
    )


def loudness(path: Path) -> float:
    """The RMS of a 16-bit WAV file's samples."""
    with wave.open(str(path), "rb") as audio:
        samples = array.array("h", audio.readframes(audio.getnframes()))
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def silence(seconds: float) -> bytes:
    return b"\xff" * int(8000 * seconds)  # u-law 0xFF encodes zero


def loud_frames(path: Path, frame_seconds: float = 0.02) -> list[bool]:
    """Per 20 ms frame of a 16-bit WAV file: whether it is the phone's tone (RMS far above
    Record()'s silence threshold, 256 in dsp.conf) rather than silence."""
    with wave.open(str(path), "rb") as audio:
        samples = array.array("h", audio.readframes(audio.getnframes()))
    size = int(8000 * frame_seconds)
    frames = [samples[i : i + size] for i in range(0, len(samples), size)]
    return [math.sqrt(sum(s * s for s in f) / len(f)) > 1000 for f in frames if f]


def settings_for(
    sandbox: Sandbox, agi_port: int, dsn: str, recording: RecordingSettings | None = None
) -> Settings:
    return server_settings(
        sandbox,
        agi_port,
        dsn,
        alarm=AlarmSettings(lead_in=0.2, page_timeout=5, announcement="Panic {extension}."),
        recording=recording
        or recording_settings(sandbox, max_seconds=MAX_SECONDS, silence_seconds=2, prefix="Alarm."),
    )


async def first_cycle(store: Stores, alarm_id: int, within: float = 20) -> StoredEvent:
    async with asyncio.timeout(within):
        while True:
            found = [e for e in await store.history.timeline(alarm_id) if e.kind == "page_cycle"]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


async def test_a_recorded_location_is_saved_and_paged_by_the_next_alarm(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    store = Stores.over(db_pool)
    await store.directory.add_paging_group(DEPARTMENT)
    await store.directory.add_paging_device(DEPARTMENT, f"PJSIP/{PHONE}")
    await store.directory.add_department(DEPARTMENT, paging_group=DEPARTMENT)
    await store.directory.map_extensions(DEPARTMENT, str(DESK))
    settings = settings_for(sandbox, agi_port, database_dsn)

    async with (
        await sandbox.ami() as ami,
        sipp.PagingPhone(sandbox, PHONE, tmp_path) as phone,
        running_server(settings),
    ):
        recording = await sipp.call_dtmf(
            sandbox,
            tmp_path / "record",
            service="*557",
            ext=DESK,
            answers=["1"],  # keep it
            microphone=tone(1.0),  # looped: the caller talks until Record()'s cap
        )
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIRecordLocationEnd", within=20)
        recording.check()
        assert (end["AGISTATUS"], end["FASTAGI_STATUS"]) == ("SUCCESS", "KEPT")
        location = await store.recordings.for_extension(str(DESK))
        assert location is not None
        assert location.recorded_by == f"extension {DESK}"
        saved = settings.recording.directory / location.file_name
        seconds = wav_seconds(saved)
        # Record() stopped at its cap (the phone never fell silent); a few frames less
        # for the beep's start and the '#'/hang-up trimming.
        assert MAX_SECONDS - 0.6 <= seconds <= MAX_SECONDS + 0.1, seconds
        assert location.seconds == pytest.approx(seconds, abs=0.01)
        assert loudness(saved) > 1000  # the phone's tone, not silence
        # The take left nothing behind in incoming/.
        assert list((settings.recording.directory / "incoming").iterdir()) == []

        # A connection of its own for the page's events: wait_event drops what it skips.
        async with await sandbox.ami() as page_events:
            trigger = await sipp.call_dtmf(
                sandbox, tmp_path / "panic", service="*555", ext=DESK, answers=["1"]
            )
            trigger.check()
            await phone.wait_invites(1)
            # What the page plays: the TTS prefix, then the recording, instead of the
            # spoken department and extension.
            page = await page_events.wait_event(
                "Newexten", Context="fastagi-panic-announce", Application="Playback", within=15
            )
        [alarm] = await store.alarms.active_alarms()
        cycle = await first_cycle(store, alarm.id)

    stem = location.file_name.removesuffix(".wav")
    recorded = f"{settings.recording.asterisk_dir()}/{stem}"
    played = page["AppData"].split("&")
    assert played[-1] == recorded, played
    assert len(played) == 2, played
    assert played[0].startswith(sandbox.tts_dir_in_asterisk), played
    assert cycle.details["prompts"] == "recording"
    assert cycle.details["recording"] == recorded
    assert cycle.details["answered"], cycle.details


async def test_record_again_then_delete_and_a_caller_outside_the_directory_is_refused(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    store = Stores.over(db_pool)
    await store.directory.add_department(DEPARTMENT)
    await store.directory.map_extensions(DEPARTMENT, str(DESK))
    settings = settings_for(sandbox, agi_port, database_dsn)
    settings.recording.directory.mkdir(parents=True, exist_ok=True)
    old = settings.recording.directory / "ext187-old.wav"
    with wave.open(str(old), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x10\x00" * 8000)
    await store.recordings.replace(
        extension=str(DESK), file_name=old.name, seconds=1.0, recorded_by="test"
    )

    async with await sandbox.ami() as ami, running_server(settings):
        # 2: record again (a second take), then 3: delete the recording the extension has.
        again = await sipp.call_dtmf(
            sandbox,
            tmp_path / "again",
            service="*557",
            ext=DESK,
            answers=["2", "3"],
            microphone=tone(1.0),
            # Two takes, each an instruction, a beep, Record() to its cap, the playback
            # and the menu: 33 s on a quiet machine, against the default 30 s (+5 s
            # before SIPp is killed), so a loaded machine timed the call out.
            within=60,
        )
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIRecordLocationEnd", within=30)
        again.check()
        assert end["FASTAGI_STATUS"] == "DELETED"
        # Extension 186 is in no department: refused without recording anything.
        refused = await sipp.call_dtmf(sandbox, tmp_path / "refused", service="*557", ext=186)
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIRecordLocationEnd", within=20)
        refused.check()
        assert end["FASTAGI_STATUS"] == "REFUSED"

    assert await store.recordings.list() == []
    assert not old.exists()
    # Both takes were dropped when the call ended.
    assert list((settings.recording.directory / "incoming").iterdir()) == []


# The silence end: the phone speaks SPEECH seconds after Record()'s beep, then is silent.
SPEECH = 1.5
SILENCE_SECONDS = 5
SILENCE_MAX_SECONDS = 20
# Asterisk's beep.gsm: 726 bytes of 33-byte GSM frames of 20 ms.
BEEP = 0.44
# When the phone starts speaking, after Record() began: the call's first AGI commands
# (20-300 ms; seconds on a loaded machine) start the instruction later than the phone's
# audio, which starts with the answer; up to AIM of them leaves the speech inside the
# take, and its leading silence (AIM less that delay) stays below SILENCE_SECONDS, else
# Record() would end before the phone spoke (it counts silence from its start).
AIM = 4.0


async def test_the_take_ends_after_the_silence_trimmed_as_asterisk_trims(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    """Record()'s silence end (apps/app_record.c): after more than ``silence`` seconds of
    silence it stops, RECORD_STATUS=SILENCE, and rewinds ``silence - 1`` seconds: the take
    keeps the speech and one second of the silence after it, and ends long before
    ``max_seconds``."""
    store = Stores.over(db_pool)
    await store.directory.add_department(DEPARTMENT)
    await store.directory.map_extensions(DEPARTMENT, str(DESK))
    recording = recording_settings(
        sandbox, max_seconds=SILENCE_MAX_SECONDS, silence_seconds=SILENCE_SECONDS
    )
    settings = settings_for(sandbox, agi_port, database_dsn, recording)
    # The instruction rendered ahead, so that its length says when Record() begins.
    tts = TextToSpeech(tts_settings(sandbox))
    try:
        texts = [
            prompts.RECORD_INSTRUCTION,
            prompts.RECORD_YOU_SAID,
            prompts.RECORD_MENU,
            prompts.RECORD_KEPT,
        ]
        rendered = await tts.prerender(texts)
        assert not [r for r in rendered.values() if isinstance(r, Exception)], rendered
        instruction = await asyncio.to_thread(tts.prompt_for(prompts.RECORD_INSTRUCTION).seconds)
    finally:
        await tts.aclose()
    # From the answer: silence through the instruction and the beep, the speech, then
    # silence for longer than the whole take may last.
    microphone = silence(instruction + BEEP + AIM) + tone(SPEECH) + silence(SILENCE_MAX_SECONDS + 5)

    async with await sandbox.ami() as ami, running_server(settings):
        call = await sipp.call_dtmf(
            sandbox,
            tmp_path / "record",
            service="*557",
            ext=DESK,
            answers=["1"],  # keep it
            microphone=microphone,
            within=60,
        )
        status = await ami.wait_event("VarSet", Variable="RECORD_STATUS", within=30)
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIRecordLocationEnd", within=30)
        call.check()
    assert status["Value"] == "SILENCE"
    assert end["FASTAGI_STATUS"] == "KEPT"
    location = await store.recordings.for_extension(str(DESK))
    assert location is not None
    saved = recording.directory / location.file_name
    seconds = wav_seconds(saved)
    loud = loud_frames(saved)
    first = loud.index(True)
    last = len(loud) - 1 - loud[::-1].index(True)
    spoken = (last - first + 1) * 0.02
    leading, trailing = first * 0.02, (len(loud) - 1 - last) * 0.02
    print(
        f"take {seconds:.2f} s: {leading:.2f} s silent, {spoken:.2f} s spoken, {trailing:.2f} s"
        f" silent (instruction {instruction:.2f} s)"
    )
    assert all(loud[first : last + 1]), "the speech is one piece"
    assert spoken == pytest.approx(SPEECH, abs=0.1), "all of the speech is in the take"
    assert 0 < leading < SILENCE_SECONDS
    # SILENCE_SECONDS of silence heard, SILENCE_SECONDS - 1 of them cut off again.
    assert trailing == pytest.approx(1.0, abs=0.15)
    assert seconds == pytest.approx(leading + spoken + trailing, abs=0.03)
    assert seconds < SILENCE_MAX_SECONDS / 2
