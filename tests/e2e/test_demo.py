"""The production wiring end to end: ``running_server`` (what ``fastagi serve`` runs)
against the sandbox and a fresh database seeded like ``make run``, driven by the same
story ``fastagi demo`` plays: trigger and confirm, two page cycles, deactivation by PIN."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from fastagi.admin import seed_demo
from fastagi.app import running_server
from fastagi.config import AgiSettings, AmiSettings, DatabaseSettings, Settings
from fastagi.demo import DEMO_CYCLES, DEMO_PHONES, run_demo
from fastagi.sandbox import Sandbox
from fastagi.store.alarms import AlarmStore
from fastagi.tts import TtsSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def settings_for(sandbox: Sandbox, agi_port: int, dsn: str) -> Settings:
    return Settings(
        agi=AgiSettings(port=agi_port),
        database=DatabaseSettings(dsn=SecretStr(dsn)),
        ami=AmiSettings(
            host=sandbox.ami_host,
            port=sandbox.ami_port,
            username=sandbox.ami_username,
            secret=SecretStr(sandbox.ami_secret),
        ),
        tts=TtsSettings(directory=sandbox.tts_dir, asterisk_directory=sandbox.tts_dir_in_asterisk),
    )


async def test_the_demo_story_through_the_production_wiring(
    sandbox: Sandbox, agi_port: int, database_dsn: str, db_pool
) -> None:
    demo = await seed_demo(AlarmStore(db_pool))

    async with running_server(settings_for(sandbox, agi_port, database_dsn)):
        await run_demo(sandbox, database_dsn)

    store = AlarmStore(db_pool)
    [alarm] = await store.recent_alarms()
    assert alarm.state == "deactivated"
    assert alarm.department_name == "Emergency Room"
    assert alarm.extension == "101"
    assert alarm.deactivated_by == f"extension {demo.deactivator}"
    kinds = [event.kind for event in await store.timeline(alarm.id)]
    assert kinds.count("activated") == 1
    assert kinds.count("deactivated") == 1
    cycles = [event for event in await store.timeline(alarm.id) if event.kind == "page_cycle"]
    assert len(cycles) >= DEMO_CYCLES
    assert cycles[0].details["answered"] == len(DEMO_PHONES)
    assert await store.active_alarms() == []
