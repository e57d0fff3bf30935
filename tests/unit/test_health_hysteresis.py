"""The hysteresis between scheduled runs of checks and the site's health
(fastagi/domain/health.py): N failing runs in a row raise, M passing runs in a row clear,
and nothing in between flaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastagi.domain.health import Health, Hysteresis


def run(hysteresis: Hysteresis, observations: str) -> list[Health | None]:
    """Feed ``F`` (a run with a FAIL) and ``P`` (a run without); the changes."""
    return [hysteresis.observe(mark == "F") for mark in observations]


def test_raised_after_n_failing_runs_and_cleared_after_m_passing_ones() -> None:
    hysteresis = Hysteresis(raise_after=2, clear_after=3)
    assert run(hysteresis, "PPP") == [None, None, Health.HEALTHY]
    assert run(hysteresis, "FF") == [None, Health.DEGRADED]
    assert run(hysteresis, "FPP") == [None, None, None]
    assert hysteresis.state is Health.DEGRADED
    assert run(hysteresis, "P") == [Health.HEALTHY]


def test_an_alternating_fault_neither_raises_nor_clears() -> None:
    healthy = Hysteresis(raise_after=2, clear_after=2)
    run(healthy, "PP")
    assert run(healthy, "FP" * 20) == [None] * 40
    assert healthy.state is Health.HEALTHY

    degraded = Hysteresis(raise_after=2, clear_after=2)
    run(degraded, "FF")
    assert run(degraded, "PF" * 20) == [None] * 40
    assert degraded.state is Health.DEGRADED


def test_it_settles_from_unknown_on_whichever_streak_completes_first() -> None:
    assert run(Hysteresis(raise_after=2, clear_after=3), "FPFF") == [
        None,
        None,
        None,
        Health.DEGRADED,
    ]
    assert run(Hysteresis(raise_after=2, clear_after=1), "P") == [Health.HEALTHY]


def test_one_failing_run_never_raises_with_raise_after_two() -> None:
    hysteresis = Hysteresis(raise_after=2, clear_after=1)
    assert run(hysteresis, "PFPFPFP").count(Health.DEGRADED) == 0


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Hysteresis(raise_after=0, clear_after=1)


@given(
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
    st.lists(st.booleans(), max_size=60),
)
def test_every_change_follows_its_full_streak(
    raise_after: int, clear_after: int, observations: list[bool]
) -> None:
    hysteresis = Hysteresis(raise_after, clear_after)
    for index, failing in enumerate(observations):
        change = hysteresis.observe(failing)
        if change is None:
            continue
        needed = raise_after if change is Health.DEGRADED else clear_after
        streak = observations[index + 1 - needed : index + 1]
        assert len(streak) == needed
        assert all(f == failing for f in streak)
        assert change is (Health.DEGRADED if failing else Health.HEALTHY)
