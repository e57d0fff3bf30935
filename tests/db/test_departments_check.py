"""``fastagi check``'s ``departments`` line, which the server also runs every ``[health]
interval``: it measures each department's announcement from the pieces the server
rendered ahead, and renders none itself."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi.assurance import Status, run_checks
from fastagi.config import DatabaseSettings, Settings
from fastagi.store import Stores
from fastagi.tts import TextToSpeech
from fastagi.tts.announcement import DIGIT_CLIPS, department_texts

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

TEMPLATE = "Panic alarm. Department {department}. Extension {extension}."
WARD = "Ward 3 of the north wing, second floor, beside the old staircase"


def site_settings(dsn: str, prompts: Path) -> Settings:
    return Settings.model_validate(
        {
            "database": DatabaseSettings(dsn=SecretStr(dsn)),
            "tts": {"directory": prompts},
            "alarm": {"announcement": TEMPLATE},
        }
    )


async def test_a_department_whose_pieces_are_not_rendered_yet_is_measured_by_a_later_run(
    database_dsn: str, db_pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    # A new site's first minute: the server is still rendering its departments. The
    # check (5 s per run) would render each one a second time, in its scratch directory,
    # and outlive its time at a few dozen departments. The ward pages every 5 s, less
    # than its long name takes to say, which is what the check warns of once measured.
    stores = Stores.over(db_pool)
    await stores.directory.add_paging_group("ward")
    await stores.directory.add_paging_device("ward", "PJSIP/201")
    await stores.directory.add_department(WARD, interval_seconds=5, paging_group="ward")
    await stores.directory.map_extensions(WARD, "201-209")
    prompts = tmp_path / "prompts"
    settings = site_settings(database_dsn, prompts)

    before = (await run_checks(settings, only=["departments"])).result("departments")
    rendered_by_the_check = sorted(prompts.glob("*")) if prompts.exists() else []

    assert (before.status, before.message) == (
        Status.OK,
        "1 departments, each with a paging group of devices; 1 not measured yet (their"
        " prompts are not rendered yet)",
    )
    assert rendered_by_the_check == []

    # The server's renders are in: the next run measures the ward.
    async with TextToSpeech(settings.tts) as site:
        await site.prerender([], clips=[*department_texts([TEMPLATE], [WARD]), *DIGIT_CLIPS])
    after = (await run_checks(settings, only=["departments"])).result("departments")

    assert after.status == Status.WARN
    assert after.message.startswith(f"{WARD} pages every ")
    assert "not measured yet" not in after.message
