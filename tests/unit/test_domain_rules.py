"""The pure timing and formatting rules of a running alarm (fastagi/domain/rules.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastagi.domain.rules import (
    announcement_text,
    error_backoff,
    join_items,
    lamp_states,
    next_cycle_start,
    wait_before,
)


def test_next_cycle_is_one_interval_after_the_last_start() -> None:
    # A 3 s page with a 10 s interval: start to start, not end to start.
    assert next_cycle_start(100.0, 103.0, 10) == 110.0


def test_a_page_longer_than_the_interval_delays_the_next_until_it_ends() -> None:
    assert next_cycle_start(100.0, 112.5, 10) == 112.5


def test_no_catch_up_burst_after_a_long_page() -> None:
    # After a 35 s page with a 10 s interval, the next page is at its end, and the one
    # after that a full interval later: the missed slots are not paged in a row.
    second = next_cycle_start(100.0, 135.0, 10)
    assert second == 135.0
    assert next_cycle_start(second, second + 3, 10) == 145.0


@given(
    started=st.floats(0, 1e6),
    duration=st.floats(0, 1e4),
    interval=st.integers(5, 3600),
)
def test_cycles_never_overlap_and_never_come_early(
    started: float, duration: float, interval: int
) -> None:
    ended = started + duration
    following = next_cycle_start(started, ended, interval)
    assert following >= ended
    assert following >= started + interval
    assert following == pytest.approx(max(started + interval, ended))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_cycle_start(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="end before"):
        next_cycle_start(5.0, 1.0, 10)


def test_wait_before() -> None:
    assert wait_before(100.0, 104.5) == 4.5
    assert wait_before(100.0, 90.0) == 0.0


def test_error_backoff_doubles_up_to_a_ceiling() -> None:
    assert [error_backoff(n, 2.0, 30.0) for n in range(7)] == [0, 2, 4, 8, 16, 30, 30]


def test_announcement_text() -> None:
    template = "Panic alarm. Department {department}. Extension {extension}."
    assert (
        announcement_text(template, "Ward 3", "201")
        == "Panic alarm. Department Ward 3. Extension 201."
    )
    assert announcement_text(template, None, "7") == (
        "Panic alarm. Department unknown department. Extension 7."
    )


def test_join_items_for_page_and_playback() -> None:
    assert join_items(["PJSIP/201", "PJSIP/202"], "devices") == "PJSIP/201&PJSIP/202"
    assert join_items(["/x/tts-ab"], "prompts") == "/x/tts-ab"
    with pytest.raises(ValueError, match="no devices"):
        join_items([], "devices")
    for bad in ("PJSIP/201&PJSIP/666", "a,b", "", "PJSIP/2 01", "x(y)"):
        with pytest.raises(ValueError, match="cannot be passed"):
            join_items([bad], "devices")


def test_lamp_states() -> None:
    options = {"lamp_device": "Custom:PANIC", "department_prefix": "Custom:PANIC_"}
    assert lamp_states([], [1, 2], on_state="BUSY", **options) == {
        "Custom:PANIC": "NOT_INUSE",
        "Custom:PANIC_1": "NOT_INUSE",
        "Custom:PANIC_2": "NOT_INUSE",
    }
    assert lamp_states([2, None], [1, 2], on_state="RINGING", **options) == {
        "Custom:PANIC": "RINGING",
        "Custom:PANIC_1": "NOT_INUSE",
        "Custom:PANIC_2": "RINGING",
    }
