"""The system-wide PIN rate limit, counted from the shared history in PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import asyncpg
import pytest

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

pytestmark = pytest.mark.db


@pytest.fixture
def store(db_pool: Pool) -> Stores:
    return Stores.over(db_pool)


def failure(extension: str, seconds_ago: float) -> HistoryEvent:
    return HistoryEvent(
        kind=EventKind.DEACTIVATION_FAILED,
        alarm_id=None,
        extension=extension,
        department=None,
        details={"route": "deactivate", "attempt": 1},
        occurred_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )


async def test_failures_of_many_extensions_lock_everybody(store: Stores) -> None:
    # Three extensions, one wrong PIN each: no extension reaches its own limit.
    await store.history.append_events([failure("150", 20), failure("151", 10)])
    assert await store.deactivators.global_lockout_until(3, 60, 300) is None
    await store.history.append_event(failure("152", 0))

    until = await store.deactivators.global_lockout_until(3, 60, 300)
    now = datetime.now(UTC)
    assert until is not None
    assert now + timedelta(seconds=290) < until < now + timedelta(seconds=310)


async def test_failures_spread_wider_than_the_window_do_not_count(store: Stores) -> None:
    await store.history.append_events([failure("150", 50), failure("151", 25), failure("152", 0)])
    assert await store.deactivators.global_lockout_until(3, 30, 300) is None
    assert await store.deactivators.global_lockout_until(3, 60, 300) is not None


async def test_the_global_lockout_ends_after_its_cool_down(store: Stores) -> None:
    # Three failures within a minute, the last one 400 s ago: locked until 100 s ago.
    await store.history.append_events(
        [failure("150", 420), failure("151", 410), failure("152", 400)]
    )
    assert await store.deactivators.global_lockout_until(3, 60, 300) is None
    assert await store.deactivators.global_lockout_until(3, 60, 500) is not None


async def test_zero_turns_the_global_limit_off(store: Stores) -> None:
    await store.history.append_events([failure("150", 0) for _ in range(5)])
    assert await store.deactivators.global_lockout_until(0, 60, 300) is None
    assert await store.deactivators.global_lockout_until(5, 60, 0) is None
    assert await store.deactivators.global_lockout_until(5, 60, 300) is not None
