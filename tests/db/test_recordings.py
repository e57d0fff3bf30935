"""Recorded locations against a real PostgreSQL and real files: keep, replace (the row
switched and the old file gone), the refusals, delete, which recording a page takes, and
the page's fallback to TTS with ``recording_unusable`` when the file is gone."""

from __future__ import annotations

import asyncio
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import asyncpg
import pytest

from fastagi.admin.recordings import RecordingError, delete_recording, keep_recording
from fastagi.alarms.locations import RecordedLocations
from fastagi.config import RecordingSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import HistoryEvent
from fastagi.store import Stores

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


def write_wav(path: Path, seconds: float, *, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x10\x00" * int(rate * seconds))
    return path


@pytest.fixture
def store(db_pool: Pool) -> Stores:
    return Stores.over(db_pool)


@pytest.fixture
def settings(tmp_path: Path) -> RecordingSettings:
    return RecordingSettings(
        directory=tmp_path / "locations", asterisk_directory="/chroot/locations"
    )


def alarm(extension: str, department_id: int | None) -> Alarm:
    return Alarm(
        id=7,
        alarm_key=f"extension:{extension}",
        department_id=department_id,
        department_name="Ward",
        extension=extension,
        state="active",
        activated_at=datetime.now(UTC),
        deactivated_at=None,
        deactivated_by=None,
        deactivation_reason=None,
        cycles=0,
        last_cycle_at=None,
    )


async def test_a_new_recording_replaces_the_old_row_and_file(
    store: Stores, settings: RecordingSettings, tmp_path: Path
) -> None:
    first = await keep_recording(
        store, settings, write_wav(tmp_path / "a.wav", 1.0), by="test", extension="101"
    )
    second = await keep_recording(
        store, settings, write_wav(tmp_path / "b.wav", 2.5), by="test", extension="101"
    )

    assert first.file_name != second.file_name
    assert not (settings.directory / first.file_name).exists()
    assert (settings.directory / second.file_name).exists()
    [listed] = await store.recordings.list()
    assert (listed.extension, listed.seconds, listed.file_name) == ("101", 2.5, second.file_name)
    # The uploaded file is copied, not taken.
    assert (tmp_path / "b.wav").exists()
    since = datetime(2000, 1, 1, tzinfo=UTC)
    changes = await store.history.history(since, datetime.now(UTC))
    actions = [e.details.get("action") for e in changes if e.kind == "config_changed"]
    assert actions.count("recording keep") == 2


@pytest.mark.parametrize(
    ("seconds", "rate", "reason"),
    [(0.2, 8000, "less than"), (1.0, 16000, "16000 Hz")],
)
async def test_too_short_or_another_format_is_refused_and_nothing_changes(
    store: Stores,
    settings: RecordingSettings,
    tmp_path: Path,
    seconds: float,
    rate: int,
    reason: str,
) -> None:
    source = write_wav(tmp_path / "x.wav", seconds, rate=rate)
    with pytest.raises(RecordingError, match=reason):
        await keep_recording(store, settings, source, by="test", extension="101")
    assert await store.recordings.list() == []


async def test_delete_removes_row_and_file(
    store: Stores, settings: RecordingSettings, tmp_path: Path
) -> None:
    kept = await keep_recording(
        store, settings, write_wav(tmp_path / "a.wav", 1.0), by="test", extension="101"
    )
    deleted = await delete_recording(store, settings, by="test", extension="101")
    assert deleted.file_name == kept.file_name
    assert not (settings.directory / kept.file_name).exists()
    with pytest.raises(RecordingError, match="no recording"):
        await delete_recording(store, settings, by="test", extension="101")


async def test_the_page_takes_the_extensions_recording_before_its_departments(
    store: Stores, settings: RecordingSettings, tmp_path: Path
) -> None:
    ward = await store.directory.add_department("Ward")
    by_department = await keep_recording(
        store, settings, write_wav(tmp_path / "d.wav", 1.0), by="test", department="ward"
    )
    events: list[HistoryEvent] = []

    async def record(event: HistoryEvent) -> None:
        events.append(event)

    locations = RecordedLocations(store.recordings, settings, record=record)
    stem = by_department.file_name.removesuffix(".wav")
    assert await locations.for_alarm(alarm("101", ward.id)) == f"/chroot/locations/{stem}"
    own = await keep_recording(
        store, settings, write_wav(tmp_path / "e.wav", 1.0), by="test", extension="101"
    )
    assert await locations.for_alarm(alarm("101", ward.id)) == (
        f"/chroot/locations/{own.file_name.removesuffix('.wav')}"
    )
    assert await locations.for_alarm(alarm("102", None)) is None
    assert events == []


async def test_a_missing_file_falls_back_to_tts_with_a_history_event(
    store: Stores, settings: RecordingSettings, tmp_path: Path
) -> None:
    kept = await keep_recording(
        store, settings, write_wav(tmp_path / "a.wav", 1.0), by="test", extension="101"
    )
    (settings.directory / kept.file_name).unlink()
    events: list[HistoryEvent] = []

    async def record(event: HistoryEvent) -> None:
        events.append(event)

    locations = RecordedLocations(store.recordings, settings, record=record)
    assert await locations.for_alarm(alarm("101", None)) is None
    [event] = events
    assert event.kind == "recording_unusable"
    assert event.details["owner"] == "extension 101"
    assert event.alarm_id == 7


async def test_a_lookup_postgresql_does_not_answer_is_no_recording_the_page_goes_on(
    store: Stores, settings: RecordingSettings, tmp_path: Path, db_pool: Pool
) -> None:
    """A wedged database (here: a lock the look-up waits on) is the same as none: the
    page speaks the announcement after the look-up's bound, and no event is lost."""
    await keep_recording(
        store, settings, write_wav(tmp_path / "a.wav", 1.0), by="test", extension="101"
    )
    events: list[HistoryEvent] = []

    async def record(event: HistoryEvent) -> None:
        events.append(event)

    locations = RecordedLocations(store.recordings, settings, record=record, lookup_timeout=0.5)
    async with db_pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE recorded_locations IN ACCESS EXCLUSIVE MODE")
        async with asyncio.timeout(5):  # without the bound: held until the lock goes
            found = await locations.for_alarm(alarm("101", None))
    assert found is None
    assert events == []


async def test_removing_a_department_removes_its_recordings_row(
    store: Stores, settings: RecordingSettings, tmp_path: Path
) -> None:
    await store.directory.add_department("Ward")
    await keep_recording(
        store, settings, write_wav(tmp_path / "d.wav", 1.0), by="test", department="Ward"
    )
    await store.directory.remove_department("Ward")
    assert await store.recordings.list() == []
