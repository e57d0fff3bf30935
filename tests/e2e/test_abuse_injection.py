"""Hostile department names and caller ids are data, never commands: stored literally by
the admin CLI (SQL), paged literally through AMI and the dialplan (no forged variable,
no re-evaluated ``${...}``, no extra channel), spoken literally by the TTS (no shell)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi import cli
from fastagi.agi.protocol import LocalProtocolError, encode_command
from fastagi.alarms.paging import Pager
from fastagi.ami import AmiClient
from fastagi.config import AlarmSettings
from fastagi.flows import prompts
from fastagi.tts import TextToSpeech, TtsSettings
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOSTILE_NAMES = [
    'Ward "7"\\ ; DROP TABLE alarms;--',
    "x\nEXEC Dial PJSIP/999",
    "Sales, ALARM_ID=7",
    "Notaufnahme S\u00fcd",
    "${SHELL(id)}",
    "Action: Originate\r\n",
]
SETTINGS = AlarmSettings(lead_in=0.2, page_timeout=5, max_page_seconds=20)


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


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    client = AmiClient(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, SecretStr(sandbox.ami_secret)
    )
    async with client:
        yield client


def received_invites(phone: sipp.PagingPhone) -> list[str]:
    return [m.text for m in phone.received("INVITE ")]


def display_name(invite: str) -> str:
    [from_line] = [line for line in invite.splitlines() if line.lower().startswith("from:")]
    return from_line.split(":", 1)[1].strip()


@pytest.mark.parametrize(
    ("department", "shown"),
    [
        # A comma and a quote: neither splits the Originate variables nor Set()'s value.
        ('Ward "7", ALARM_ID=7', r'"PANIC Ward \"7\", ALARM_ID=7"'),
        ("${SHELL(id)}", '"PANIC ${SHELL(id)}"'),
        ("Notaufnahme S\u00fcd", '"PANIC Notaufnahme S\u00fcd"'),
        ("x\nEXEC Dial PJSIP/999", '"PANIC x EXEC Dial PJSIP/999"'),
        ("Sales) & PJSIP/202 (", '"PANIC Sales) & PJSIP/202 ("'),
    ],
)
async def test_a_page_carries_a_hostile_department_name_literally(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path, department: str, shown: str
) -> None:
    pager = Pager(ami, SETTINGS)
    async with sipp.PagingPhone(sandbox, 206, tmp_path) as phone:
        result = await pager.page(
            70,
            1,
            ["PJSIP/206"],
            ["beep"],
            caller_name=SETTINGS.caller_name.format(department=department, extension="101"),
            caller_number="101",
        )
        async with asyncio.timeout(10):
            while not received_invites(phone):  # noqa: ASYNC110 (SIPp's log is all there is)
                await asyncio.sleep(0.05)
    # One device dialled and answered: no forged device, no extra channel.
    assert (result.dialled, result.answered, result.error) == (1, 1, None)
    [invite] = received_invites(phone)
    assert display_name(invite).startswith(shown + " <sip:101@")
    assert "uid=" not in invite


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
