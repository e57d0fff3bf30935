"""The console's recorded locations page in a real browser: an admin finds a recording
(made as *557 makes one) and deletes it: the row and the file are gone, the change is in
the history with the admin's name; a viewer gets neither the link nor the page."""

from __future__ import annotations

import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fastagi.admin import users
from fastagi.admin.recordings import keep_recording
from fastagi.config import RecordingSettings
from fastagi.store import Stores
from tests.browser import login, open_page
from tests.console import USERS, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def write_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x10\x00" * int(8000 * seconds))
    return path


async def test_an_admin_deletes_a_recording_and_a_viewer_cannot(
    browser, database_dsn, db_pool, tmp_path: Path
):
    stores = Stores.over(db_pool)
    ada, vera = USERS["ada"][1], USERS["vera"][1]
    await users.add_user(stores, "ada", "admin", ada, by="test")
    await users.add_user(stores, "vera", "viewer", vera, by="test")
    settings = web_settings(database_dsn)
    settings.recording = RecordingSettings(directory=tmp_path / "locations")
    kept = await keep_recording(
        stores,
        settings.recording,
        write_wav(tmp_path / "take.wav", 1.5),
        by="extension 155",
        extension="155",
    )
    async with console_over(db_pool, settings) as console:
        viewer = await open_page(browser, console.url)
        await login(viewer, "vera", vera)
        assert await viewer.get_by_role("link", name="Recordings", exact=True).count() == 0
        response = await viewer.goto("/recordings")
        assert response is not None
        assert response.status == 403

        admin = await open_page(browser, console.url)
        await login(admin, "ada", ada)
        async with admin.expect_navigation():
            await admin.get_by_role("link", name="Recordings", exact=True).click()
        row = admin.locator(f"#recording-{kept.id}")
        assert "extension 155" in await row.inner_text()
        assert "1.5 s" in await row.inner_text()
        async with admin.expect_navigation():
            await admin.get_by_role("button", name="Delete the recording of extension 155").click()
        assert "Recording deleted" in await admin.get_by_role("status").inner_text()
        assert await admin.locator(f"#recording-{kept.id}").count() == 0
        assert await admin.get_by_text("No recorded locations.").is_visible()

    assert await stores.recordings.list() == []
    assert not (settings.recording.directory / kept.file_name).exists()
    now = datetime.now(UTC)
    events = await stores.history.history(now - timedelta(hours=1), now + timedelta(hours=1))
    changes = [(e.details["action"], e.details["by"]) for e in events if e.kind == "config_changed"]
    assert ("recording delete", "web:ada") in changes
