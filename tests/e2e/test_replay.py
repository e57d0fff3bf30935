"""Replaying an alarm (issue 13, part 4) on the sandbox: an alarm is raised from a SIPp
desk phone, pages twice and is deactivated; ``fastagi history export --alarm ID --format
replay`` writes its file (no PIN); the engine re-enacts it into a fresh database and the
timelines match within tolerances, on a server whose own ``[alarm]`` settings are the
defaults (the file's replace them); the original's call to the emergency service (busy)
is listed beside its timeline, not re-enacted. Then the department's paging group is changed and the
alarm replayed with the directory of now and another lead-in: the differences name both.

Desk phone 188 and paging phones 288 and 289 are this file's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fastagi import cli
from fastagi.admin.alarms import deactivate_alarm
from fastagi.app import running_server
from fastagi.config import (
    AlarmSettings,
    EmergencySettings,
    Settings,
)
from fastagi.flows import prompts
from fastagi.store import Stores
from fastagi_dev.replay import load_replay_file, replay
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.settings import server_settings
from tests import sipp
from tests.alarm_stack import prerender
from tests.pg import PgServer, _database_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DEPARTMENT = "Replay Ward"
DESK = 188
FIRST, SECOND = 288, 289
EMERGENCY_LINE = SECOND  # busy while the original runs; Ward B's phone in the last replay
PIN = "2468"


def settings_for(sandbox: Sandbox, agi_port: int, dsn: str, **sections: Any) -> Settings:
    return server_settings(
        sandbox,
        agi_port,
        dsn,
        alarm=AlarmSettings(lead_in=0.2, page_timeout=5, announcement="Panic {extension}."),
        **sections,
    )


# The original also calls the emergency service: one line, busy, one round. A replay
# does not re-enact it (the sandbox calls no emergency service) but lists it.
EMERGENCY = EmergencySettings(
    destinations=[f"PJSIP/{EMERGENCY_LINE}"],
    ring_timeout=3,
    rounds=1,
    escalation_rounds=1,
    round_pause=0.2,
    poll_interval=0.5,
)


@pytest.fixture
def fresh_dsn(pg_cluster: PgServer, pg_template: str) -> Iterator[Callable[[], str]]:
    """More fresh, migrated databases: one per replay."""
    names: list[str] = []

    def create() -> str:
        names.append(_database_name("r"))
        return pg_cluster.create_database(names[-1], template=pg_template)

    yield create
    for name in names:
        pg_cluster.drop_database(name)


async def cycles(
    stores: Stores, alarm_id: int, count: int, within: float = 30, kind: str = "page_cycle"
) -> None:
    async with asyncio.timeout(within):
        while True:
            timeline = await stores.history.timeline(alarm_id)
            if sum(e.kind == kind for e in timeline) >= count:
                return
            await asyncio.sleep(0.1)


async def test_an_alarm_replayed_matches_and_a_changed_paging_group_is_named(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    fresh_dsn: Callable[[], str],
    tmp_path: Path,
) -> None:
    stores = Stores.over(db_pool)
    await stores.directory.add_paging_group("Ward A")
    await stores.directory.add_paging_device("Ward A", f"PJSIP/{FIRST}")
    # A page every 10 s, its announcement 1.8 s long: on a loaded machine Asterisk's
    # playback stalls (a page of 1.8 s took 8.4 s with two busy loops beside the test),
    # and a page longer than the interval pushes the next one (never two at once), which
    # a replay on a quiet machine rightly reports as a difference. 10 s leaves 8 s.
    await stores.directory.add_department(DEPARTMENT, interval_seconds=10, paging_group="Ward A")
    await stores.directory.map_extensions(DEPARTMENT, str(DESK))

    # Rendered before the original, as the replays find them: a cold render (seconds
    # on a loaded machine) would move the original's trigger and pages but not the
    # replays'.
    await prerender(
        sandbox,
        prompts.panic_question(DEPARTMENT),
        announcements=[("Panic {extension}.", DEPARTMENT)],
    )

    # The original: triggered and confirmed by phone, two pages, the emergency line busy,
    # deactivated.
    async with (
        sipp.PagingPhone(sandbox, FIRST, tmp_path / "original") as phone,
        sipp.Phone(sandbox, EMERGENCY_LINE, tmp_path / "original", "uas_busy.xml"),
        running_server(settings_for(sandbox, agi_port, database_dsn, emergency=EMERGENCY)),
    ):
        call = await sipp.call_dtmf(
            sandbox, tmp_path / "original", service="*555", ext=DESK, answers=["1"]
        )
        call.check()
        [alarm] = await stores.alarms.active_alarms()
        await cycles(stores, alarm.id, 1, kind="emergency_exhausted")
        await cycles(stores, alarm.id, 2)
        await deactivate_alarm(stores, alarm.id, reason="all safe", by="cli:guard")
        await phone.wait_invites(2)

    out = tmp_path / "alarm.replay.json"
    code = await asyncio.to_thread(
        cli.main,
        [
            "history",
            "export",
            "--alarm",
            str(alarm.id),
            "--format",
            "replay",
            "--output",
            str(out),
            "--dsn",
            database_dsn,
        ],
    )
    assert code == 0
    document = load_replay_file(out)
    assert PIN not in out.read_text()
    assert "pin" not in json.dumps(document["directory"]).lower()
    assert document["directory"]["department"]["paging_group"] == "Ward A"
    assert document["alarm"]["deactivated_by"] == "cli:guard"
    # The server's [alarm] settings that shaped it.
    alarm_settings = document["settings"]["alarm"]
    assert (alarm_settings["lead_in"], alarm_settings["page_timeout"]) == (0.2, 5)
    assert alarm_settings["announcement"] == "Panic {extension}."

    # Replayed into a fresh database, with the directory of the time, on a "laptop" whose
    # [alarm] settings are the defaults (a 1 s lead-in, the long announcement, 20 s
    # timeout): the file's settings replace them, and the timelines match.
    laptop = server_settings(sandbox, agi_port, fresh_dsn())
    assert laptop.alarm.announcement != alarm_settings["announcement"]
    result = await replay(document, sandbox=sandbox, settings=laptop, workdir=tmp_path / "replay")
    print(result.report())
    assert [e.kind for e in result.replayed].count("page_cycle") == 2
    assert result.matches, result.report()
    assert result.notes == []
    # The emergency call: listed, not re-enacted, no difference.
    listed = [e.kind for e in result.listed]
    assert listed == [
        "emergency_dialling",
        "emergency_call",
        "escalated",  # the first list exhausted; the escalation list is empty
        "emergency_exhausted",
    ], listed
    assert f"destination PJSIP/{EMERGENCY_LINE}, outcome busy)" in result.report()
    assert " s  emergency_call*\n" in result.report()  # in the original's column

    # The paging group changed since: replayed with the directory of now.
    await stores.directory.add_paging_group("Ward B")
    await stores.directory.add_paging_device("Ward B", f"PJSIP/{SECOND}")
    await stores.directory.update_department(DEPARTMENT, paging_group="Ward B")
    changed = await replay(
        document,
        sandbox=sandbox,
        settings=settings_for(sandbox, agi_port, fresh_dsn()),
        workdir=tmp_path / "changed",
        directory=await stores.snapshots.current(DEPARTMENT),
        alarm_settings={"lead_in": 0.5},  # and a what-if on the settings
    )
    print(changed.report())
    assert changed.settings_differences == ["setting alarm.lead_in: 0.2 then, 0.5 now"]
    assert "setting alarm.lead_in: 0.2 then, 0.5 now" in changed.report()
    assert "paging group: 'Ward A' then, 'Ward B' now" in changed.directory_differences
    assert f"devices: ['PJSIP/{FIRST}'] then, ['PJSIP/{SECOND}'] now" in (
        changed.directory_differences
    )
    assert any(f"PJSIP/{SECOND}" in d for d in changed.timeline_differences), changed.report()
    assert "paging group: 'Ward A' then, 'Ward B' now" in changed.report()
