"""The console's pure parts: durations, where a form may send the browser, the cycle chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from fastagi.store.history import StoredEvent
from fastagi.web.security import local_path
from fastagi.web.timeline import cycle_chart, entries
from fastagi.web.views import duration

START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min 00 s"),
        (187, "3 min 07 s"),
        (3725, "1 h 02 min"),
        (-5, "0 s"),
    ],
)
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("/alarms/7", "/alarms/7"),
        ("/?x=1", "/?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_a_form_only_ever_sends_the_browser_within_the_console(given: object, safe: str) -> None:
    assert local_path(given) == safe


def cycle(number: int, at: float, answered: int, dialled: int = 2) -> StoredEvent:
    started = START + timedelta(seconds=at)
    return StoredEvent(
        id=number,
        event_id=uuid4(),
        occurred_at=started + timedelta(seconds=2),
        alarm_id=1,
        kind="page_cycle",
        extension="101",
        department="Ward",
        details={
            "cycle": number,
            "answered": answered,
            "dialled": dialled,
            "started_at": started.isoformat(),
            "interval": 10,
        },
    )


def test_the_chart_puts_each_cycle_at_its_start_as_tall_as_its_answers() -> None:
    events = [cycle(1, 1, 2), cycle(2, 11, 1), cycle(3, 21, 0)]
    chart = cycle_chart(events, START, START + timedelta(seconds=30))
    assert chart is not None
    xs = [bar.x for bar in chart.bars]
    assert xs == sorted(xs)
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)  # 10 s apart, both
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == pytest.approx(2 * heights[1])
    assert heights[2] == 0
    assert all(bar.y + bar.height == pytest.approx(chart.bottom) for bar in chart.bars)
    assert [value for _, value in chart.y_ticks] == [0, 1, 2]
    assert chart.description.endswith("answered phones per cycle: 2, 1, 0")
    assert cycle_chart([], START, START) is None


def test_the_timeline_says_who_deactivated_and_why() -> None:
    event = StoredEvent(
        id=1,
        event_id=uuid4(),
        occurred_at=START,
        alarm_id=1,
        kind="deactivated",
        extension=None,
        department="Ward",
        details={"by": "web:otto", "reason": "drill over", "source": "web"},
    )
    [entry] = entries([event])
    assert (entry.title, entry.text) == ("Deactivated", "web:otto: drill over (web)")
