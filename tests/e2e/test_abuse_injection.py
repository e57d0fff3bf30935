"""Hostile department names and caller ids are data, never commands: stored literally by
the admin CLI (SQL), paged literally through AMI and the dialplan (no forged variable,
no re-evaluated ``${...}``, no extra channel), spoken literally by the TTS (no shell).

The page test takes the whole hostile path: the name typed into the admin CLI, looked up
by a real panic call through the sandbox, paged by the production services; it checks
what the paging phone displays, what espeak-ng was given and what Asterisk played."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from fastagi import cli
from fastagi.agi.protocol import LocalProtocolError, encode_command
from fastagi.app import running_server
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.rules import announcement_segments
from fastagi.flows import prompts
from fastagi.store import Stores
from fastagi.tts import TextToSpeech, TtsSettings
from fastagi.tts import render as tts_render
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.e2e.test_demo import settings_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOSTILE_NAMES = [
    'Ward "7"\\ ; DROP TABLE alarms;--',
    "x\nEXEC Dial PJSIP/999",
    "Sales, ALARM_ID=7",
    "Notaufnahme S\u00fcd",
    "${SHELL(id)}",
    "Action: Originate\r\n",
]


def test_admin_cli_stores_hostile_department_names_literally(database_dsn: str, capsys) -> None:
    for name in HOSTILE_NAMES:
        assert cli.main(["department", "add", name, "--dsn", database_dsn]) == 0
    capsys.readouterr()

    async def read() -> tuple[set[str], int, bool]:
        connection = await asyncpg.connect(database_dsn)
        try:
            rows = await connection.fetch("SELECT name FROM departments")
            alarms = await connection.fetchval("SELECT count(*) FROM alarms")
            table = await connection.fetchval("SELECT to_regclass('alarms') IS NOT NULL")
        finally:
            await connection.close()
        return {row["name"] for row in rows}, alarms, table

    names, alarms, table = asyncio.run(read())
    assert names == {name.strip() for name in HOSTILE_NAMES}
    # The DROP TABLE was a name, not a statement.
    assert (alarms, table) == (0, True)


def received_invites(phone: sipp.PagingPhone) -> list[str]:
    return [m.text for m in phone.received("INVITE ")]


def display_name(invite: str) -> str:
    [from_line] = [line for line in invite.splitlines() if line.lower().startswith("from:")]
    return from_line.split(":", 1)[1].strip()


def spoken(text: str) -> str:
    """What the TTS is documented to make of a text (fastagi/tts/render.py spoken_text):
    control characters become spaces, runs of whitespace one space; nothing else."""
    return " ".join(text.split())


@pytest.fixture
def espeak_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text handed to the espeak-ng worker, as it is handed over (a spy: the real
    worker still renders it)."""
    texts: list[str] = []
    real = tts_render._run_worker

    async def spy(text: str, settings: TtsSettings, wav: Path) -> None:
        texts.append(text)
        await real(text, settings, wav)

    monkeypatch.setattr(tts_render, "_run_worker", spy)
    return texts


def cli_ok(*argv: str) -> None:
    assert cli.main(list(argv)) == 0, argv


@pytest.mark.parametrize(
    ("department", "shown"),
    [
        # A comma and a quote: neither splits the Originate variables nor Set()'s value.
        ('Ward "7", ALARM_ID=7', r'"PANIC Ward \"7\", ALARM_ID=7"'),
        # Not evaluated by the dialplan, not run by a shell behind the TTS.
        ("${SHELL(id)} $(touch /tmp/pwned)", '"PANIC ${SHELL(id)} $(touch /tmp/pwned)"'),
        # A newline: no second line in any protocol; shown and spoken as a space.
        ("x\nEXEC Dial PJSIP/999", '"PANIC x EXEC Dial PJSIP/999"'),
        # Page()'s device separator and parentheses, and SQL.
        (
            "Sales) & PJSIP/202 (; DROP TABLE alarms;--",
            '"PANIC Sales) & PJSIP/202 (; DROP TABLE alarms;--"',
        ),
    ],
    ids=["comma-quote", "dialplan-shell", "newline", "separators-sql"],
)
async def test_a_hostile_department_name_goes_from_the_cli_to_the_phones_and_tts_literally(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    espeak_inputs: list[str],
    department: str,
    shown: str,
) -> None:
    """The whole hostile path: the name is typed into the admin CLI, stored, looked up by
    a real panic call (SIPp desk phone 108 dials *555 through the sandbox, confirms with
    1), asked back by TTS, paged by the alarm over AMI and the dialplan, and arrives on
    the paging phone as its caller name; the TTS speaks it as written."""
    ext, phone_ext = "108", 207
    dsn = ["--dsn", database_dsn]
    # The admin CLI is synchronous (it runs its own event loop): in a thread.
    await asyncio.to_thread(cli_ok, "paging-group", "add", "Hostile", *dsn)
    await asyncio.to_thread(
        cli_ok, "paging-group", "device", "add", "Hostile", f"PJSIP/{phone_ext}", *dsn
    )
    await asyncio.to_thread(
        cli_ok, "department", "add", department, "--paging-group", "Hostile", *dsn
    )
    await asyncio.to_thread(cli_ok, "extension", "map", department, ext, *dsn)

    settings = settings_for(sandbox, agi_port, database_dsn)
    # A directory of this test's own, so every prompt is rendered here (and seen by the
    # spy), and Asterisk can still read it (it is inside the sandbox's sounds).
    sounds = f"inj-{uuid.uuid4().hex[:12]}"
    settings.tts = TtsSettings(
        directory=sandbox.tts_dir / sounds,
        asterisk_directory=f"{sandbox.tts_dir_in_asterisk}/{sounds}",
    )
    settings.alarm.lead_in = 0.2
    # The question must be the rendered one, however loaded the machine: a cold render
    # can take longer than the 3 s after which a live call falls back to built-in
    # sounds (seen with two CPU hogs running), and the caller answers whichever plays.
    settings.flows.render_timeout = 30.0
    question = prompts.panic_question(department)
    # The page speaks the department's piece of the announcement, then the extension's
    # digit clips (fastagi/tts/announcement.py).
    announcement = announcement_segments(settings.alarm.announcement, department, ext)[0]
    assert isinstance(announcement, str)
    console_from = sandbox.log_path.stat().st_size

    store = Stores.over(db_pool)
    tts = TextToSpeech(settings.tts)
    async with (
        sipp.PagingPhone(sandbox, phone_ext, tmp_path) as phone,
        await sandbox.ami() as ami,
        running_server(settings),
    ):
        call = await sipp.call_dtmf(
            sandbox, tmp_path / "panic", service="*555", ext=int(ext), answers=["1"]
        )
        call.check()
        await phone.wait_invites(1, within=15)
        # The page plays the announcement: the very prompt rendered from the name. Only
        # then is the alarm stopped (which hangs the page up, Playback or not).
        page = await ami.wait_event(
            "Newexten", Context="fastagi-panic-announce", Application="Playback", within=15
        )
        assert tts.prompt_for(announcement, clip=True).asterisk_name in page["AppData"].split("&")
        [alarm] = await store.alarms.active_alarms()
        await store.alarms.deactivate(
            alarm.id,
            "test",
            "done",
            HistoryEvent(EventKind.DEACTIVATED, alarm.id, ext, alarm.department_name),
        )

    # Stored and looked up literally (the CLI strips only the ends).
    assert alarm.department_name == department.strip()
    # Paged: one device dialled, and its caller name is the name as written.
    [invite] = received_invites(phone)
    assert display_name(invite).startswith(shown + " <sip:108@"), display_name(invite)
    assert "uid=" not in invite
    # Spoken as written: the texts reached espeak-ng literally ...
    assert spoken(question) in espeak_inputs, espeak_inputs
    assert spoken(announcement) in espeak_inputs, espeak_inputs
    # ... and Asterisk played the very question to the caller (the announcement: above).
    with sandbox.log_path.open("rb") as log:
        log.seek(console_from)
        console = log.read().decode(errors="replace")
    played = f"Playing '{tts.prompt_for(question).asterisk_name}."
    assert played in console, (question, played)


async def test_tts_speaks_hostile_text_literally_and_runs_no_shell(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sentinel = tmp_path / "pwned"
    names = [*HOSTILE_NAMES, f"$(touch {sentinel})", f"`touch {sentinel}`; touch {sentinel}"]
    tts = TextToSpeech(TtsSettings(directory=tmp_path / "tts", asterisk_directory=str(tmp_path)))
    try:
        results = await tts.prerender([prompts.panic_question(name) for name in names])
    finally:
        await tts.aclose()
    failed = {text: r for text, r in results.items() if isinstance(r, Exception)}
    assert not failed
    assert len(list((tmp_path / "tts").rglob("*.*"))) >= len(names)
    assert not sentinel.exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_agi_commands_never_carry_a_line_break(name: str) -> None:
    if any(char in name for char in "\r\n"):
        with pytest.raises(LocalProtocolError):
            encode_command("EXEC", "Playback", name)
    else:
        line = encode_command("EXEC", "Playback", name)
        assert line.count(b"\n") == 1
        assert line.endswith(b"\n")
