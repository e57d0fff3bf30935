"""The announcement in pieces rendered ahead of time (fastagi/tts/announcement.py), against
the real espeak-ng and sox: a new extension of a known department renders nothing."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import pytest

from fastagi.config import Settings
from fastagi.config.catalogues import load_languages
from fastagi.domain.rules import SpokenCharacters, announcement_segments, announcement_text
from fastagi.tts import TextToSpeech, TtsSettings
from fastagi.tts.announcement import (
    DIGIT_CLIPS,
    AnnouncementMeter,
    PiecesNotRendered,
    department_texts,
    page_clips,
    render_segments,
    segments_ready,
)

TEMPLATE = "Panic alarm. Department {department}. Extension {extension}."


def test_segments_cut_the_announcement_where_it_names_the_extension():
    assert announcement_segments(TEMPLATE, "Ward 3", "201") == [
        "Panic alarm. Department Ward 3. Extension",
        SpokenCharacters("201"),
    ]
    # Braces in a department name are text; escaped braces in the template stay braces.
    assert announcement_segments("{{x}} {department}: {extension} now", "W{1}", "2-0*1") == [
        "{x} W{1}:",
        SpokenCharacters("201"),
        "now",
    ]
    assert announcement_segments("Test {department}.", None, "") == ["Test unknown department."]
    assert announcement_segments("{extension}", "W", "9" * 30) == [SpokenCharacters("9" * 20)]


def test_segments_say_what_the_whole_text_says():
    for department, extension in [("Ward 3", "201"), ("ER", "1a"), (None, "7")]:
        spoken = " ".join(
            " ".join(s.characters) if isinstance(s, SpokenCharacters) else s
            for s in announcement_segments(TEMPLATE, department, extension)
        )
        whole = announcement_text(TEMPLATE, department, " ".join(extension))
        assert spoken == whole.rstrip(".")


@pytest.fixture
async def tts(tmp_path: Path):
    async with TextToSpeech(TtsSettings(directory=tmp_path / "prompts")) as service:
        yield service


async def test_a_page_of_prerendered_page_clips_renders_nothing(tts: TextToSpeech):
    # What tests and the replay engine render ahead so that a page's timing holds no
    # render: the whole announcement as one text would leave every piece to render.
    await tts.prerender([], clips=page_clips("Panic {extension}.", "Replay Ward"))
    assert segments_ready(tts, announcement_segments("Panic {extension}.", "Replay Ward", "188"))


async def test_a_new_extension_of_a_prepared_department_renders_nothing(tts: TextToSpeech):
    results = await tts.prerender(
        [], clips=[*DIGIT_CLIPS, *department_texts([TEMPLATE], ["Ward 3"])]
    )
    assert len(results) == 11
    renders = tts.renders_started
    segments = announcement_segments(TEMPLATE, "Ward 3", "9120")
    assert segments_ready(tts, segments)
    prompts = await render_segments(tts, segments)
    assert tts.renders_started == renders
    assert [p.host_path.name for p in prompts[1:]] == [
        tts.prompt_for(d, clip=True).host_path.name for d in "9120"
    ]
    # Another department is not ready: it renders, on demand, once.
    other = announcement_segments(TEMPLATE, "Ward 4", "9120")
    assert not segments_ready(tts, other)
    await render_segments(tts, other)
    assert tts.renders_started == renders + 1


async def test_digit_clips_are_trimmed(tts: TextToSpeech):
    whole = await tts.render("7")
    clip = await tts.render("7", clip=True)
    assert clip.host_path != whole.host_path
    # espeak-ng pads a lone word with about 0.4 s of silence; the clip keeps 0.04 s.
    assert clip.seconds() < whole.seconds() - 0.15


async def test_parallel_prerender_renders_each_text_once(tts: TextToSpeech):
    texts = [f"Department {n}" for n in range(6)]
    results = await tts.prerender([*texts, *texts], clips=["1", "2"], parallel=3)
    assert sorted(results) == sorted([*texts, "1", "2"])
    assert tts.renders_started == 8


def meter_settings(tmp_path: Path) -> Settings:
    """The site's settings with its prompts in ``tmp_path`` and TEMPLATE as its page."""
    return Settings.model_validate(
        {"tts": {"directory": tmp_path / "prompts"}, "alarm": {"announcement": TEMPLATE}}
    )


@pytest.fixture
async def meter(tmp_path: Path) -> AsyncIterator[AnnouncementMeter]:
    """A meter of the site of :func:`meter_settings`, closed after the test."""
    announcement_meter = AnnouncementMeter(meter_settings(tmp_path))
    try:
        yield announcement_meter
    finally:
        await announcement_meter.close()


async def test_the_meter_measures_the_pieces_that_are_paged(
    meter: AnnouncementMeter, tmp_path: Path
):
    settings = meter_settings(tmp_path)
    announcement = await meter.render("Ward 3", ("201-209",))
    assert announcement is not None
    async with TextToSpeech(settings.tts) as tts:
        pieces = await render_segments(tts, announcement_segments(TEMPLATE, "Ward 3", "201"))
    seconds = sum(piece.seconds() for piece in pieces)
    assert announcement.seconds == pytest.approx(settings.alarm.lead_in + seconds)
    assert announcement.audio.stat().st_size == sum(p.host_path.stat().st_size for p in pieces)


async def test_a_preview_read_while_it_is_joined_again_is_whole(
    meter: AnnouncementMeter, monkeypatch: pytest.MonkeyPatch
):
    # The console's preview reads the joined file after its render; two requests for one
    # department (Chromium sends two for an <audio>) join the same file meanwhile. A join
    # that rewrote it in place truncated it under the other's read: a WAV of no audio,
    # duration 0 in Chromium (test_web_config failed so, once). Here the second join
    # stops after its first piece, and the file is read then.
    first = await meter.render("Ward 3", ("201-209",))
    assert first is not None
    whole = first.audio.read_bytes()
    copy = shutil.copyfileobj
    one_piece_copied, go_on = threading.Event(), threading.Event()

    def copy_then_wait(source: BinaryIO, out: BinaryIO) -> None:
        copy(source, out)
        one_piece_copied.set()
        go_on.wait(timeout=10)

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_wait)
    joining = asyncio.create_task(meter.render("Ward 3", ("201-209",)))
    await asyncio.to_thread(one_piece_copied.wait, 10)
    read_meanwhile = first.audio.read_bytes()
    go_on.set()
    again = await joining

    assert one_piece_copied.is_set()
    assert len(read_meanwhile) == len(whole)
    assert again is not None
    assert again.audio.read_bytes() == whole


async def test_the_meter_reads_the_pieces_the_site_rendered_ahead(tmp_path: Path):
    # The scheduled departments check measures every department every 10 s: on a running
    # site, whose server rendered every department's pieces at start-up, it renders none
    # (with 500 departments it would otherwise start about 1,500 renders a run).
    settings = meter_settings(tmp_path)
    alone = AnnouncementMeter(settings)
    try:
        measured_alone = await alone.measure("Ward 3", ("201-209",))
        assert measured_alone is not None
        assert alone.renders_started == 4  # the text before extension 201; "2", "0", "1"
    finally:
        await alone.close()
    async with TextToSpeech(settings.tts) as site:
        await site.prerender([], clips=[*department_texts([TEMPLATE], ["Ward 3"]), *DIGIT_CLIPS])
    meter = AnnouncementMeter(settings)
    try:
        measured = await meter.measure("Ward 3", ("201-209",))
        rendered = await meter.render("Ward 3", ("201-209",))
        assert meter.renders_started == 0
        assert measured == measured_alone
        assert rendered is not None
        assert rendered.seconds == measured_alone.seconds
        assert rendered.audio.stat().st_size > 0
        # A department the site has not rendered yet is still measured, in the scratch.
        other = await meter.measure("Ward 4", ("201-209",))
        assert other is not None
        assert meter.renders_started == 1
    finally:
        await meter.close()


async def test_the_meter_measures_a_polish_department_in_polish(
    meter: AnnouncementMeter, tmp_path: Path
):
    # The page of a Polish department is the Polish template, in the Polish voice, its
    # extension from clips of the Polish digit words: that is what the meter measures.
    settings = meter_settings(tmp_path)
    polish = load_languages().get("pl")
    template = polish.template("announcement")
    announcement = await meter.render("Oddział 3", ("201-209",), "pl")
    assert announcement is not None
    assert announcement.text == (
        "Alarm napadowy. Dział Oddział 3. Numer wewnętrzny dwa zero jeden."
    )
    async with TextToSpeech(settings.tts) as tts:
        pieces = await render_segments(
            tts,
            announcement_segments(template, "Oddział 3", "201"),
            voice="pl",
            digits=polish.digits,
        )
    seconds = sum(piece.seconds() for piece in pieces)
    assert announcement.seconds == pytest.approx(settings.alarm.lead_in + seconds)
    assert announcement.audio.stat().st_size == sum(p.host_path.stat().st_size for p in pieces)
    english = await meter.measure("Oddział 3", ("201-209",))
    assert english is not None
    assert english.seconds != pytest.approx(announcement.seconds)


async def test_a_meter_told_not_to_render_raises_for_a_missing_piece_and_renders_nothing(
    tmp_path: Path,
):
    # The scheduled departments check's meter: while the server renders a new site's
    # departments, it must not render each of them a second time.
    settings = meter_settings(tmp_path)
    meter = AnnouncementMeter(settings, render_missing=False)
    try:
        with pytest.raises(PiecesNotRendered):
            await meter.measure("Ward 3", ("201-209",))
        assert meter.renders_started == 0
        async with TextToSpeech(settings.tts) as site:
            await site.prerender(
                [], clips=[*department_texts([TEMPLATE], ["Ward 3"]), *DIGIT_CLIPS]
            )
        measured = await meter.measure("Ward 3", ("201-209",))
        assert measured is not None
        assert measured.seconds > settings.alarm.lead_in
        assert meter.renders_started == 0
    finally:
        await meter.close()
