"""Drills end to end, through the production wiring (``running_services`` and
``running_server``, as ``fastagi serve`` runs them) on the sandbox Asterisk, SIPp paging
phones, PostgreSQL and an aiosmtpd server:

- ``fastagi drill`` run as the administrator runs it (a process of its own) against one
  answering and one busy phone: both receive the drill's cycles, nothing after its end,
  the report names the busy one, the history says drill, the mail says [TEST];
- a real alarm of the department during a drill: the drill stops at once, the real alarm
  pages the same phone at once, and its mail is the only one;
- a drill from a SIPp desk phone (*558, a wrong PIN, then the right one);
- the schedule firing a few seconds from now, on two servers, one of them late: one drill.

Phones 271-276 are this file's (paging endpoints with static contacts); desk phone 171
belongs to the drilled department.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from fastagi.alarms.drill_schedule import DrillScheduler
from fastagi.app import running_server, running_services
from fastagi.config import (
    AlarmSettings,
    DrillSettings,
    Settings,
)
from fastagi.config.catalogues import load_languages
from fastagi.config.notify import NotifySettings, SmtpSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.drill import SCHEDULE, YIELD_REASON, report_event_id
from fastagi.store import Stores
from fastagi.store.alarms import DrillStartOutcome
from fastagi.store.history import StoredEvent
from fastagi.tts import TextToSpeech
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.settings import server_settings
from tests import sipp
from tests.alarm_stack import prerender
from tests.notify_servers import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEPARTMENT = "Drill Ward"
DESK = 171
INTERVAL = 5  # the schema's minimum
PIN = "4321"
DRILL = DrillSettings(announcement="Test {department}.", pin=PIN)
SECURITY = "security@hospital.example"


@pytest.fixture
async def store(db_pool: asyncpg.Pool[asyncpg.Record]) -> Stores:
    return Stores.over(db_pool)


def settings_for(
    sandbox: Sandbox,
    agi_port: int,
    dsn: str,
    *,
    smtp: SmtpServer | None = None,
    drill: DrillSettings = DRILL,
) -> Settings:
    notify = NotifySettings()
    if smtp is not None:
        notify = NotifySettings(
            smtp=SmtpSettings(host="127.0.0.1", port=smtp.port, security="none", timeout=5),
            emails=[SECURITY],
        )
    return server_settings(
        sandbox,
        agi_port,
        dsn,
        notify=notify,
        alarm=AlarmSettings(
            lead_in=0.2, page_timeout=5, takeover_interval=1.0, announcement="Panic {extension}."
        ),
        drill=drill,
    )


async def department(store: Stores, *phones: int) -> None:
    await store.directory.add_paging_group(DEPARTMENT)
    for ext in phones:
        await store.directory.add_paging_device(DEPARTMENT, f"PJSIP/{ext}")
    await store.directory.add_department(
        DEPARTMENT, interval_seconds=INTERVAL, paging_group=DEPARTMENT
    )
    await store.directory.map_extensions(DEPARTMENT, str(DESK))


async def fastagi(dsn: str, *args: str) -> tuple[int, str, str]:
    """``python -m fastagi`` as an administrator runs it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAGI_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastagi",
        *args,
        "--dsn",
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def wait_for(store: Stores, alarm_id: int, kind: str, within: float = 20) -> StoredEvent:
    """The alarm's first event of ``kind``, once written (the database offers nothing to
    wait on but a poll)."""
    async with asyncio.timeout(within):
        while True:
            found = [e for e in await store.history.timeline(alarm_id) if e.kind == kind]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


async def only_drill(store: Stores) -> Alarm:
    [drill] = [a for a in await store.alarms.recent_alarms() if a.is_drill]
    return drill


def display_name(invite: sipp.SipMessage) -> str:
    return invite.header("From").partition('"')[2].partition('"')[0]


async def test_a_drill_pages_the_phones_stops_by_itself_and_names_who_did_not_answer(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    store: Stores,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    await department(store, 271, 272)
    settings = settings_for(
        sandbox, agi_port, database_dsn, smtp=smtp, drill=DRILL.model_copy(update={"notify": True})
    )
    async with (
        sipp.PagingPhone(sandbox, 271, tmp_path) as answering,
        sipp.Phone(sandbox, 272, tmp_path, "uas_busy.xml") as busy,
        running_server(settings),
    ):
        code, out, err = await fastagi(database_dsn, "drill", DEPARTMENT, "--cycles", "2")
        drill = await only_drill(store)
        ended = drill.deactivated_at
        assert ended is not None
        # Nothing after its end: one interval more and nothing came.
        await asyncio.sleep(INTERVAL + 2)
        listed = await fastagi(database_dsn, "alarm", "list", "--all")
        since = (drill.activated_at - timedelta(minutes=1)).isoformat()
        until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        summary = await fastagi(
            database_dsn, "history", "summary", "--since", since, "--until", until
        )

    # The CLI's report names the busy phone, and says so by its exit code.
    print(out)
    assert (code, err) == (1, ""), out
    assert out.splitlines()[-1] == "did not answer: PJSIP/272"
    assert "  PJSIP/271: answered 2 of 2 (ok: answered, answered)" in out
    assert "  PJSIP/272: answered 0 of 2 (MISSED: busy, busy)" in out

    # Both phones received the drill's two pages, announced as a test; none after its end.
    for phone in (answering, busy):
        invites = phone.received("INVITE ")
        assert len(invites) == 2, phone.ext
        assert {display_name(invite) for invite in invites} == {f"TEST {DEPARTMENT}"}
        # SIPp logs local wall-clock times.
        assert all(invite.time.timestamp() <= ended.timestamp() for invite in invites)
        gap = (invites[1].time - invites[0].time).total_seconds()
        print(f"phone {phone.ext}: INVITEs {gap:.2f} s apart")
        assert abs(gap - INTERVAL) <= INTERVAL * 0.1, gap

    # The history: a drill, its two pages, its end by itself and its report, each once.
    assert drill.drill is not None
    assert (drill.drill.cycles, drill.drill.requested_by) == (2, "cli:root")
    assert (drill.deactivated_by, drill.cycles, drill.extension) == ("drill", 2, "")
    timeline = await store.history.timeline(drill.id)
    kinds = [e.kind for e in timeline]
    for kind, count in (
        ("drill_started", 1),
        ("page_cycle", 2),
        ("deactivated", 1),
        ("drill_report", 1),
        ("activated", 0),
    ):
        assert kinds.count(kind) == count, kinds
    assert kinds.index("drill_report") > kinds.index("deactivated")
    pages = [e.details for e in timeline if e.kind == "page_cycle"]
    assert [p["devices"] for p in pages] == [{"PJSIP/271": "answered", "PJSIP/272": "busy"}] * 2
    [report] = [e for e in timeline if e.kind == "drill_report"]
    assert report.event_id == report_event_id(drill.id)
    assert report.details["not_answered"] == ["PJSIP/272"]
    assert report.details["ending"] == "completed"
    assert any(e.kind == "lamp_changed" for e in timeline)  # the lamps are part of it

    # Only [TEST] mail: the drill's start and end, nothing that reads as a real alarm.
    subjects = [mail.message["Subject"] for mail in smtp.inbox.mails]
    assert len(subjects) == 2, subjects
    assert all(subject.startswith("[TEST] ") for subject in subjects), subjects

    # Marked as a drill in the list, left out of the real alarms' summary.
    assert listed[0] == 0
    assert listed[1].splitlines()[1].split()[:3] == [str(drill.id), "DRILL", "deactivated"]
    assert summary[0] == 0, summary
    assert "real alarms" in summary[1]
    assert ": 0 (drills apart)" in summary[1].splitlines()[0]
    assert "drills: 1" in summary[1]
    assert "completed, MISSED" in summary[1]
    assert "PJSIP/272" in summary[1]


async def test_a_real_alarm_during_a_drill_stops_the_drill_and_pages_at_once(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    store: Stores,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    await department(store, 273)
    await prerender(
        sandbox,
        announcements=[("Panic {extension}.", DEPARTMENT), (DRILL.announcement, DEPARTMENT)],
    )
    settings = settings_for(sandbox, agi_port, database_dsn, smtp=smtp)  # no drill mail
    async with (
        sipp.PagingPhone(sandbox, 273, tmp_path) as phone,
        running_services(settings) as services,
    ):
        directory = await services.alarms.refresh_directory()
        ward = directory.department_for(str(DESK))
        assert ward is not None
        started = await services.alarms.start_drill(ward, requested_by="test", cycles=3)
        assert started.outcome is DrillStartOutcome.STARTED
        assert started.alarm is not None
        await phone.wait("ACK")  # the drill's page is up: the phone is in it
        triggered = time.time()
        activation = await services.alarms.activate(str(DESK), ward, uniqueid="real-1")
        returned = time.time() - triggered
        invites = await phone.wait_invites(2)
        report = await wait_for(store, started.alarm.id, "drill_report")
        drill = await store.alarms.get_alarm(started.alarm.id)
        real = activation.alarm
        # The real alarm pages on, alone.
        await phone.wait_invites(3, within=INTERVAL + 3)
        assert await services.alarms.deactivate(real.id, by="test", reason="over")

    first_real_page = invites[1].timestamp() - triggered
    [drill_bye, *_] = phone.received("BYE")
    hung_up = drill_bye.time.timestamp() - triggered
    print(
        f"the drill's page hung up (BYE at the phone) {hung_up * 1000:.0f} ms,"
        f" activate() returned {returned * 1000:.0f} ms, the real alarm's first INVITE"
        f" {first_real_page * 1000:.0f} ms after the trigger"
    )
    assert activation.created
    assert not real.is_drill
    assert real.id != started.alarm.id
    assert first_real_page < 2.0
    # The drill yielded at once: deactivated for the real alarm, its page hung up first.
    assert drill is not None
    assert (drill.state, drill.deactivated_by) == ("deactivated", f"alarm {real.id}")
    assert drill.deactivation_reason == YIELD_REASON
    assert drill.cycles == 1
    assert drill_bye.time.timestamp() <= invites[1].timestamp()
    names = [display_name(invite) for invite in phone.received("INVITE ")]
    assert names[0] == f"TEST {DEPARTMENT}"
    assert set(names[1:]) == {f"PANIC {DEPARTMENT}"}, names  # no drill page after the alarm
    assert report.details["ending"] == "yielded"

    # The real alarm's own history knows no drill; the only mail is the real alarm's.
    kinds = [e.kind for e in await store.history.timeline(real.id)]
    assert kinds.count("activated") == 1
    assert "drill_started" not in kinds
    subjects = [mail.message["Subject"] for mail in smtp.inbox.mails]
    assert subjects, subjects
    assert all(f"Drill Ward, extension {DESK}" in subject for subject in subjects), subjects
    assert not any("[TEST]" in subject for subject in subjects)


async def test_a_drill_from_a_phone_with_the_drill_pin(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    store: Stores,
    tmp_path: Path,
) -> None:
    await department(store, 274)
    await prerender(sandbox, announcements=[(DRILL.announcement, DEPARTMENT)])
    settings = settings_for(sandbox, agi_port, database_dsn)
    async with (
        await sandbox.ami() as ami,
        sipp.PagingPhone(sandbox, 274, tmp_path) as phone,
        running_server(settings),
    ):
        call = await sipp.call_dtmf(
            sandbox,
            tmp_path / "desk",
            service="*558",
            ext=DESK,
            answers=["99#", f"{PIN}#"],  # a wrong PIN, then the right one
        )
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIDrillEnd", within=20)
        [invite] = await phone.wait_invites(1)
        drill = await only_drill(store)
        report = await wait_for(store, drill.id, "drill_report")
        drill = await only_drill(store)

    call.check()
    assert (end["AGISTATUS"], end["FASTAGI_STATUS"]) == ("SUCCESS", "STARTED")
    assert drill.drill is not None
    assert (drill.drill.requested_by, drill.extension) == (f"extension {DESK}", str(DESK))
    assert drill.deactivated_by == "drill"
    assert report.details["not_answered"] == []
    assert len(phone.received("INVITE ")) == 1
    # The call's steps are in the drill's timeline: the wrong PIN, then the start.
    timeline = await store.history.timeline(drill.id)
    [refused] = [e for e in timeline if e.kind == "drill_refused"]
    [started] = [e for e in timeline if e.kind == "drill_started"]
    assert refused.details["reason"] == "wrong PIN"
    assert refused.details["uniqueid"] == started.details["uniqueid"]
    assert refused.occurred_at < started.occurred_at
    assert started.occurred_at.timestamp() < invite.timestamp()


async def test_the_schedule_runs_its_drill_once_on_two_servers_one_of_them_late(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    store: Stores,
    tmp_path: Path,
) -> None:
    await department(store, 275)
    soon = datetime.now(UTC) + timedelta(seconds=4)
    drill = DRILL.model_copy(
        update={"schedule": "daily", "time": soon.strftime("%H:%M:%S"), "timezone": "UTC"}
    )
    first = settings_for(sandbox, agi_port, database_dsn, drill=drill)
    late_by = timedelta(seconds=8)
    async with AsyncExitStack() as stack:
        phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 275, tmp_path))
        one = await stack.enter_async_context(running_services(first))
        other = await stack.enter_async_context(
            running_services(first.model_copy(update={"drill": DRILL}))
        )
        # The second server runs the same schedule with a clock 8 s late: it comes after
        # the slot's drill has ended.
        late = DrillScheduler(
            other.alarms,
            drill,
            recorder=other.recorder,
            instance_id="late",
            clock=lambda: datetime.now(UTC) - late_by,
        )
        running = asyncio.create_task(late.run())
        try:
            async with asyncio.timeout(30):
                while late.slots_run == 0 or one.drills.slots_run == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        drills = [a for a in await store.alarms.recent_alarms() if a.is_drill]
        assert len(drills) == 1, drills
        report = await wait_for(store, drills[0].id, "drill_report")

    [alarm] = drills
    assert alarm.drill is not None
    assert alarm.drill.requested_by == SCHEDULE
    assert alarm.drill.scheduled_for is not None
    assert abs((alarm.drill.scheduled_for - soon).total_seconds()) < 1
    assert alarm.activated_at - alarm.drill.scheduled_for < timedelta(seconds=1)
    assert report.details["ending"] == "completed"
    assert len(phone.received("INVITE ")) == 1
    # Nothing refused either: the late server found the slot taken and said nothing.
    rows = await store.history.history(soon - timedelta(minutes=1), soon + timedelta(minutes=5))
    assert [e.kind for e in rows if e.kind.startswith("drill")] == [
        "drill_started",
        "drill_report",
    ]


async def test_a_site_speaking_polish_speaks_polish_on_the_drill_line(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    store: Stores,
    tmp_path: Path,
) -> None:
    # The department has no language of its own: the site's default applies.
    await department(store)
    await store.policy.set_policy(default_language="pl")
    polish = load_languages().get("pl")
    asked, started = polish.text("drill_pin_prompt"), polish.text("drill_started")
    settings = settings_for(sandbox, agi_port, database_dsn)
    tts = TextToSpeech(settings.tts)
    try:
        await tts.prerender([asked, started], voice="pl")
        files = [tts.prompt_for(text, voice="pl").asterisk_name for text in (asked, started)]
    finally:
        await tts.aclose()
    played: list[str] = []
    async with await sandbox.ami() as ami, running_server(settings):
        call = await sipp.call_dtmf(
            sandbox, tmp_path / "desk", service="*558", ext=DESK, answers=[f"{PIN}#"]
        )
        async with asyncio.timeout(20):
            while True:
                event = await ami.next_event(within=20)
                if event.get("Event") == "AGIExecStart" and event.get("Channel", "").startswith(
                    f"PJSIP/{DESK}-"
                ):
                    played.append(event["Command"])
                if (
                    event.get("Event") == "UserEvent"
                    and event.get("UserEvent") == "FastAGIDrillEnd"
                ):
                    break
    call.check()
    assert event["FASTAGI_STATUS"] == "STARTED"
    # The PIN asked and the start acknowledged in Polish, with the Polish voice.
    assert any(c.startswith(f"GET DATA {files[0]} ") for c in played), played
    assert f"EXEC Playback {files[1]}" in played, played
