"""What the caller's room hears, per confirmation mode and language (issue 13), read from
the real Asterisk's AGI command stream: every ``AGIExecStart`` of the trigger's channel,
as the sandbox's AMI reports it, so a test sees the files and commands that were played,
not only the outcome.
"""

from __future__ import annotations

import array
import asyncio
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fastagi.config.catalogues import load_languages
from fastagi.domain.pins import hash_pin_async
from fastagi.tts import Prompt, TextToSpeech
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from tests import sipp
from tests.e2e.flow_harness import FlowHarness, flow_harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

WARD = "Ward 9"
# Desk phones 132-134 and paging phone 287, which no other test uses.
EXT = 132
UNKNOWN_EXT = 133  # in no department
PAGE_EXT, PAGING_PHONE = 134, 287
LANGUAGES = load_languages()
ENGLISH, POLISH = LANGUAGES.get("en"), LANGUAGES.get("pl")


@dataclass
class RecordingTts:
    """The real text-to-speech service, noting each text and the voice it was asked for."""

    tts: TextToSpeech
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        voice: str | None = None,
    ) -> Prompt:
        self.asked.append((text, voice))
        return await self.tts.render(text, timeout=timeout, voice=voice)


@pytest.fixture
async def harness(
    sandbox: Sandbox, agi_port: int, database_dsn: str, tmp_path: Path
) -> AsyncIterator[FlowHarness]:
    async with flow_harness(sandbox, agi_port, database_dsn, tmp_path) as harness:
        await harness.department(WARD, str(EXT))
        yield harness


async def set_ward(harness: FlowHarness, *, mode: str | None, language: str | None = None) -> None:
    await harness.store.directory.update_department(WARD, confirmation_mode=mode, language=language)
    await harness.service.service.refresh_directory()


async def trigger(
    harness: FlowHarness,
    answers: list[str],
    tts: RecordingTts | None = None,
    *,
    texts: list[str] | None = None,
) -> tuple[str, list[str]]:
    """Desk phone EXT dials *555 and types ``answers``; FASTAGI_STATUS and the AGI
    commands Asterisk ran on the call, in order. ``texts`` gets the bodies of the SIP
    MESSAGEs the phone received (its display)."""
    async with await harness.sandbox.ami() as ami:
        async with harness.serving(tts=tts) as (panic, _):
            call = await sipp.call_dtmf(
                harness.sandbox, harness.workdir, service="*555", ext=EXT, answers=answers
            )
        call.check()
        assert panic.errors == []
        if texts is not None:
            # The body: what follows the blank line after the headers.
            texts.extend(
                m.text.replace("\r\n", "\n").partition("\n\n")[2].strip()
                for m in sipp.first_arrivals(call.received("MESSAGE"))
            )
        return await commands_until_end(ami)


async def commands_until_end(
    ami: SandboxAmi, end: str = "FastAGIPanicEnd"
) -> tuple[str, list[str]]:
    """FASTAGI_STATUS and the AGI commands of EXT's channel, until the route's ``end``."""
    commands: list[str] = []
    async with asyncio.timeout(20):
        while True:
            event = await ami.next_event(within=20)
            if event.get("Event") == "AGIExecStart" and event.get("Channel", "").startswith(
                f"PJSIP/{EXT}-"
            ):
                commands.append(event["Command"])
            if event.get("Event") == "UserEvent" and event.get("UserEvent") == end:
                return event["FASTAGI_STATUS"], commands


def played(commands: list[str]) -> list[tuple[str, str]]:
    """(command, file) of every command that makes a sound or shows a text."""
    found = []
    for command in commands:
        words = shlex.split(command)
        verb = " ".join(words[:2]).upper()
        if verb == "GET DATA":
            found.append(("GET DATA", words[2]))
        elif verb == "STREAM FILE":
            found.append(("STREAM FILE", words[2]))
        elif verb == "EXEC PLAYBACK":
            found.append(("Playback", words[2]))
        elif verb == "EXEC SENDTEXT":
            found.append(("SendText", ""))
    return found


async def assert_alarm_raised(harness: FlowHarness) -> None:
    [alarm] = await harness.store.alarms.active_alarms()
    assert (alarm.department_name, alarm.extension) == (WARD, str(EXT))


async def test_voice_mode_names_the_alarm_and_acknowledges(harness: FlowHarness) -> None:
    await set_ward(harness, mode="voice")
    question = ENGLISH.text("question", department=WARD)
    ack = ENGLISH.text("activated")
    await harness.tts.prerender([question, ack])
    status, commands = await trigger(harness, ["1"])
    assert status == "CONFIRMED"
    assert played(commands) == [
        ("GET DATA", harness.tts.prompt_for(question).asterisk_name),
        ("Playback", harness.tts.prompt_for(ack).asterisk_name),
    ]
    await assert_alarm_raised(harness)


async def test_neutral_mode_gives_nothing_away_and_is_silent_after(harness: FlowHarness) -> None:
    await set_ward(harness, mode="neutral")
    question = ENGLISH.text("neutral_question")
    assert "alarm" not in question.lower()
    assert "panic" not in question.lower()
    await harness.tts.prerender([question])
    status, commands = await trigger(harness, ["1"])
    assert status == "CONFIRMED"
    # The neutral question, and not a word after the answer.
    assert played(commands) == [("GET DATA", harness.tts.prompt_for(question).asterisk_name)]
    await assert_alarm_raised(harness)
    [triggered] = await harness.events("triggered")
    assert '"confirmation_mode": "neutral"' in triggered["details"]


async def test_tone_mode_beeps_then_reads_the_digit(harness: FlowHarness) -> None:
    await set_ward(harness, mode="tone")
    tts = RecordingTts(harness.tts)
    status, commands = await trigger(harness, ["1"], tts)
    assert status == "CONFIRMED"
    assert played(commands) == [("GET DATA", "beep")]
    assert tts.asked == []  # nothing spoken at all
    await assert_alarm_raised(harness)


async def test_tone_mode_cancel_is_silent(harness: FlowHarness) -> None:
    await set_ward(harness, mode="tone")
    status, commands = await trigger(harness, ["2"])
    assert status == "CANCELLED"
    assert played(commands) == [("GET DATA", "beep")]
    assert await harness.store.alarms.active_alarms() == []


async def test_display_mode_sends_text_and_plays_nothing(harness: FlowHarness) -> None:
    await set_ward(harness, mode="display")
    tts = RecordingTts(harness.tts)
    texts: list[str] = []
    status, commands = await trigger(harness, ["1"], tts, texts=texts)
    assert status == "CONFIRMED"
    # The question as text on the phone, then GET DATA with no file: silence.
    assert played(commands) == [("SendText", ""), ("GET DATA", "")]
    assert texts == [ENGLISH.text("display", department=WARD)]
    assert any(
        command.startswith("SET VARIABLE SENDTEXT_BODY") and WARD in command for command in commands
    )
    assert tts.asked == []
    await assert_alarm_raised(harness)


async def test_none_mode_raises_the_alarm_at_once(harness: FlowHarness) -> None:
    await set_ward(harness, mode="none")
    tts = RecordingTts(harness.tts)
    status, commands = await trigger(harness, [], tts)
    assert status == "CONFIRMED"
    assert played(commands) == []
    assert tts.asked == []
    await assert_alarm_raised(harness)
    assert await harness.kinds() == ["triggered", "confirmed", "activated"]


async def test_the_sites_default_mode_applies_to_a_department_without_one(
    harness: FlowHarness,
) -> None:
    await harness.store.policy.set_policy(confirmation_mode="tone")
    await set_ward(harness, mode=None)
    status, commands = await trigger(harness, ["1"])
    assert status == "CONFIRMED"
    assert played(commands) == [("GET DATA", "beep")]


def samples(path: Path) -> array.array[int]:
    audio = array.array("h")
    audio.frombytes(path.read_bytes())
    return audio


async def test_a_polish_department_asks_in_polish_with_the_polish_voice(
    harness: FlowHarness,
) -> None:
    await set_ward(harness, mode="voice", language="pl")
    tts = RecordingTts(harness.tts)
    question = POLISH.text("question", department=WARD)
    ack = POLISH.text("activated")
    assert question.startswith("Alarm napadowy")
    status, commands = await trigger(harness, ["1"], tts)
    assert status == "CONFIRMED"
    assert tts.asked == [(question, "pl"), (ack, "pl")]
    polish = harness.tts.prompt_for(question, voice="pl")
    assert played(commands) == [
        ("GET DATA", polish.asterisk_name),
        ("Playback", harness.tts.prompt_for(ack, voice="pl").asterisk_name),
    ]
    # The Polish voice, not the English one reading Polish words: the same text with
    # the site's (English) voice sounds otherwise.
    english_voice = await harness.tts.render(question)
    assert english_voice.host_path != polish.host_path
    assert samples(english_voice.host_path) != samples(polish.host_path)
    await assert_alarm_raised(harness)
    [triggered] = await harness.events("triggered")
    assert '"language": "pl"' in triggered["details"]


async def test_an_unknown_polish_extension_is_spoken_in_polish_words(
    harness: FlowHarness,
) -> None:
    # The site's default language applies to an extension of no department.
    await harness.store.policy.set_policy(default_language="pl", confirmation_mode="voice")
    tts = RecordingTts(harness.tts)
    async with await harness.sandbox.ami() as ami:
        async with harness.serving(tts=tts) as (panic, _):
            call = await sipp.call_dtmf(
                harness.sandbox, harness.workdir, service="*555", ext=UNKNOWN_EXT, answers=["2"]
            )
        call.check()
        assert panic.errors == []
        await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    label = "nieznany dział, numer wewnętrzny jeden trzy trzy"
    assert tts.asked[0] == (POLISH.text("question", department=label), "pl")


async def test_a_polish_departments_page_speaks_polish(harness: FlowHarness) -> None:
    await harness.department("Oddział 3", str(PAGE_EXT), phones=[PAGING_PHONE])
    await harness.store.directory.update_department("Oddział 3", language="pl")
    await harness.service.service.refresh_directory()
    announcement = "Alarm napadowy. Dział Oddział 3. Numer wewnętrzny jeden trzy cztery."
    assert POLISH.text("announcement", department="Oddział 3", extension="jeden trzy cztery") == (
        announcement
    )
    phone = await harness.phone(PAGING_PHONE)
    async with await harness.sandbox.ami() as ami, harness.serving():
        call = await sipp.call_dtmf(
            harness.sandbox, harness.workdir, service="*555", ext=PAGE_EXT, answers=["1"]
        )
        call.check()
        await phone.wait_invites(1, within=15)
        page = await ami.wait_event(
            "Newexten", Context="fastagi-panic-announce", Application="Playback", within=15
        )
    # In pieces, as English pages: the text before the extension, then its digits from
    # clips of the Polish words, all in the Polish voice.
    pieces = ["Alarm napadowy. Dział Oddział 3. Numer wewnętrzny", "jeden", "trzy", "cztery"]
    assert page["AppData"].split("&") == [
        harness.tts.prompt_for(piece, clip=True, voice="pl").asterisk_name for piece in pieces
    ]


async def test_a_polish_departments_deactivation_asks_and_names_in_polish(
    harness: FlowHarness,
) -> None:
    # EXT, a deactivator of the Polish Ward 9, stops an alarm of its ward and one of
    # another department: the PIN, the menu and the acknowledgement in Polish, its voice.
    other = "Apteka"
    await harness.department(other, str(PAGE_EXT))
    await set_ward(harness, mode="voice", language="pl")
    await harness.store.deactivators.set_deactivator(str(EXT), await hash_pin_async("1234"))
    service = harness.service.service
    for ext in (EXT, PAGE_EXT):
        await service.activate(str(ext), await service.lookup(str(ext)), uniqueid=f"t-{ext}")
    pin = POLISH.text("pin_prompt")
    menu = " ".join(
        [
            POLISH.text("menu_item", key="1", department=WARD),
            POLISH.text("menu_item", key="2", department=other),
            POLISH.text("menu_all", key="9"),
        ]
    )
    done = POLISH.text("deactivated_all")
    assert menu.startswith("Naciśnij 1: Ward 9.")
    tts = RecordingTts(harness.tts)
    async with await harness.sandbox.ami() as ami:
        async with harness.serving(tts=tts) as (_, deactivate):
            call = await sipp.call_dtmf(
                harness.sandbox, harness.workdir, service="*556", ext=EXT, answers=["1234#", "9"]
            )
        call.check()
        assert deactivate.errors == []
        status, commands = await commands_until_end(ami, "FastAGIDeactivateEnd")
    assert status == "DEACTIVATED"
    assert tts.asked == [(pin, "pl"), (menu, "pl"), (done, "pl")]
    assert played(commands) == [
        ("GET DATA", harness.tts.prompt_for(pin, voice="pl").asterisk_name),
        ("GET DATA", harness.tts.prompt_for(menu, voice="pl").asterisk_name),
        ("Playback", harness.tts.prompt_for(done, voice="pl").asterisk_name),
    ]
    assert await harness.store.alarms.active_alarms() == []
