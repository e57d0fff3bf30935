"""The first alarm after a department change pages at once: its announcement was rendered
when the change went live (fastagi/app.py PromptKeeper), and the extension is spoken from
digit clips, so nothing is rendered between the activation and the first page; a
department of another language likewise, in its language and voice."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from fastagi.admin import departments, paging
from fastagi.app import running_services
from fastagi.config import Settings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import Directory
from fastagi.domain.rules import announcement_segments
from fastagi.store import Stores
from fastagi.tts import TextToSpeech
from fastagi.tts.announcement import DIGIT_CLIPS
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.e2e.test_demo import settings_for

PHONE = 281
TRIGGER = "1987"  # an extension no other test announces
POLISH = load_languages().get("pl")


async def first_page_after_a_change(
    sandbox: Sandbox,
    settings: Settings,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    name: str,
    language: str | None = None,
) -> tuple[list[str], int, TextToSpeech]:
    """A department ``name`` (of ``language``) made as an administrator makes it, then
    its first alarm: the files of its first page, the renders between the activation and
    that page, and the server's text-to-speech service (closed)."""
    store = Stores.over(db_pool)
    async with (
        sipp.PagingPhone(sandbox, PHONE, tmp_path) as phone,
        await sandbox.ami() as ami,
        running_services(settings) as services,
    ):
        keeper = services.prompt_keeper
        await keeper.wait_prepared(lambda directory: True)

        # The change, as an administrator makes it: each step NOTIFYs every server.
        await paging.add_paging_group(store, name, by="test")
        await paging.add_paging_device(store, name, f"PJSIP/{PHONE}", by="test")
        await departments.add_department(
            store, name, interval_seconds=60, paging_group=name, by="test"
        )
        if language is not None:
            await departments.set_department(store, name, language=language, by="test")
        await departments.map_extensions(store, name, TRIGGER, by="test")

        def mapped(directory: Directory) -> bool:
            department = directory.department_for(TRIGGER)
            return (
                department is not None
                and department.name == name
                and department.language == language
            )

        directory = await keeper.wait_prepared(mapped)
        renders = services.tts.renders_started
        activation = await services.alarms.activate(
            TRIGGER, directory.department_for(TRIGGER), uniqueid="cold-1"
        )
        await phone.wait_invites(1, within=15)
        page = await ami.wait_event(
            "Newexten", Context="fastagi-panic-announce", Application="Playback", within=15
        )
        rendered_on_the_way = services.tts.renders_started - renders
        assert await services.alarms.deactivate(activation.alarm.id, by="test", reason="over")
    return page["AppData"].split("&"), rendered_on_the_way, services.tts


async def test_the_first_alarm_after_a_department_change_renders_nothing(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    # A name never rendered before, in the sandbox's shared prompt directory too.
    name = f"Cold Ward {uuid.uuid4().hex[:8]}"
    settings = settings_for(sandbox, agi_port, database_dsn)
    files, rendered_on_the_way, tts = await first_page_after_a_change(
        sandbox, settings, db_pool, tmp_path, name
    )
    assert rendered_on_the_way == 0
    [department_piece, _] = announcement_segments(settings.alarm.announcement, name, TRIGGER)
    assert isinstance(department_piece, str)
    assert files == [
        tts.prompt_for(department_piece, clip=True).asterisk_name,
        *(tts.prompt_for(digit, clip=True).asterisk_name for digit in TRIGGER),
    ]
    assert set(TRIGGER) <= set(DIGIT_CLIPS)


async def test_a_polish_departments_first_alarm_renders_nothing_and_speaks_polish(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    name = f"Zimny Oddział {uuid.uuid4().hex[:8]}"
    settings = settings_for(sandbox, agi_port, database_dsn)
    files, rendered_on_the_way, tts = await first_page_after_a_change(
        sandbox, settings, db_pool, tmp_path, name, language="pl"
    )
    assert rendered_on_the_way == 0
    # The Polish template's pieces and digit words, all in the Polish voice.
    template = POLISH.template("announcement")
    [department_piece, _] = announcement_segments(template, name, TRIGGER)
    assert isinstance(department_piece, str)
    assert department_piece.startswith("Alarm napadowy. Dział")
    words = [POLISH.digits[int(digit)] for digit in TRIGGER]
    assert words == ["jeden", "dziewięć", "osiem", "siedem"]
    assert files == [
        tts.prompt_for(department_piece, clip=True, voice="pl").asterisk_name,
        *(tts.prompt_for(word, clip=True, voice="pl").asterisk_name for word in words),
    ]
    # The caller's question and acknowledgement were rendered ahead as well.
    for text in (POLISH.text("question", department=name), POLISH.text("activated")):
        assert tts.is_rendered(text, voice="pl"), text
