"""The page lock (fastagi/store/leadership.py) against a real PostgreSQL: a deactivation
waits for a page being started, a page after a deactivation sees it, a lock wait that
gives up leaves nothing held, and an open page holds no pooled connection.

"Waits" is observed, not slept on: the test waits until PostgreSQL shows the
deactivation's backend waiting for the advisory lock (``pg_locks``), then checks that the
deactivation has not returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from pydantic import SecretStr

from fastagi.config import DatabaseSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store._common import PAGE_LOCK
from fastagi.store.leadership import LeaderLocks, LockedRow
from fastagi.store.pool import create_pool

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
NAMESPACE = 0x50414E
DEADLINE = 5.0


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[Pool]:
    """The leaders' connection, one for the deactivation and one for the page's count."""
    pool = await create_pool(
        DatabaseSettings(dsn=SecretStr(database_dsn), pool_min_size=1, pool_max_size=3)
    )
    yield pool
    pool.terminate()


@pytest.fixture
async def locks(pool: Pool) -> AsyncIterator[LeaderLocks]:
    locks = LeaderLocks(pool, NAMESPACE)
    yield locks
    await locks.close()


@pytest.fixture
async def observer(database_dsn: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    connection = await asyncpg.connect(database_dsn)
    yield connection
    await connection.close()


async def active_alarm(stores: Stores, department: str = "Emergency Room") -> Alarm:
    group = f"{department} group"
    await stores.directory.add_paging_group(group)
    await stores.directory.add_paging_device(group, "PJSIP/201")
    info = await stores.directory.add_department(department, paging_group=group)
    event = HistoryEvent(EventKind.ACTIVATED, None, "105", department, {})
    alarm, _created = await stores.alarms.activate(
        f"department:{info.id}", info.id, department, "105", [event]
    )
    return alarm


async def deactivate(stores: Stores, alarm: Alarm) -> Alarm | None:
    event = HistoryEvent(EventKind.DEACTIVATED, alarm.id, "150", "Emergency Room", {})
    return await stores.alarms.deactivate(alarm.id, "150", "test", event)


async def page_locks(
    observer: asyncpg.Connection[asyncpg.Record], alarm_id: int, *, granted: bool
) -> int:
    """How many backends hold (``granted``) or wait for the page lock of ``alarm_id``."""
    return int(
        await observer.fetchval(
            """
            SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory' AND granted = $3
              AND classid = $1 AND objid = $2 AND objsubid = 2
            """,
            PAGE_LOCK,
            alarm_id,
            granted,
        )
    )


async def wait_for_lock_waiter(observer: asyncpg.Connection[asyncpg.Record], alarm_id: int) -> None:
    """Until some backend waits for the page lock of ``alarm_id``."""
    while not await page_locks(observer, alarm_id, granted=False):  # noqa: ASYNC110 (PostgreSQL has no event for it)
        await asyncio.sleep(0.01)


async def stuck_deactivation(
    observer: asyncpg.Connection[asyncpg.Record], alarm_id: int
) -> Transaction:
    """A deactivation stuck in its transaction: it holds the page lock of ``alarm_id``
    until the returned transaction is rolled back."""
    stuck = observer.transaction()
    await stuck.start()
    await observer.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", PAGE_LOCK, alarm_id)
    return stuck


async def test_a_deactivation_waits_for_the_page_being_started(
    pool: Pool,
    locks: LeaderLocks,
    observer: asyncpg.Connection[asyncpg.Record],
) -> None:
    stores = Stores.over(pool)
    alarm = await active_alarm(stores)

    async with locks.page_turn(alarm.id, DEADLINE) as row:
        deactivation = asyncio.create_task(deactivate(stores, alarm))
        waiting = asyncio.create_task(wait_for_lock_waiter(observer, alarm.id))
        # One of the two: the deactivation waits for the lock, or it did not and returned.
        await asyncio.wait({deactivation, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        waited = not deactivation.done()
        counted = await row.count(1, datetime.now(UTC)) if row is not None else False
        released_at = datetime.now(UTC)
    deactivated = await asyncio.wait_for(deactivation, DEADLINE)

    assert row is not None
    assert row.active
    assert row.cycles == 0
    assert waited
    assert counted
    assert deactivated is not None
    assert deactivated.cycles == 1  # the page's count came first
    assert deactivated.deactivated_at is not None
    assert deactivated.deactivated_at >= released_at


async def test_a_page_after_a_deactivation_sees_it(pool: Pool, locks: LeaderLocks) -> None:
    stores = Stores.over(pool)
    alarm = await active_alarm(stores)
    await deactivate(stores, alarm)

    async with locks.page_turn(alarm.id, DEADLINE) as row:
        pass

    assert row is not None
    assert not row.active


async def test_a_lock_wait_that_gives_up_leaves_the_lock_free(
    pool: Pool,
    locks: LeaderLocks,
    observer: asyncpg.Connection[asyncpg.Record],
) -> None:
    # A deactivation stuck in its transaction (held here by the observer) outlasts the
    # gate's deadline: the page goes on without an answer (never silent), and no lock is
    # left behind for the next deactivation to wait on forever.
    stores = Stores.over(pool)
    alarm = await active_alarm(stores)
    stuck = await stuck_deactivation(observer, alarm.id)

    async with locks.page_turn(alarm.id, 0.2) as row:
        pass
    await stuck.rollback()
    await locks.released()
    held = await page_locks(observer, alarm.id, granted=True)
    deactivated = await asyncio.wait_for(deactivate(stores, alarm), DEADLINE)

    assert row is None
    assert held == 0
    assert deactivated is not None


async def test_a_stalled_check_does_not_hold_up_another_alarms_page(
    pool: Pool,
    locks: LeaderLocks,
    observer: asyncpg.Connection[asyncpg.Record],
) -> None:
    # The gates of all alarms share the leaders' connection. A check that cannot be
    # answered (here: a deactivation of the first alarm stuck in its transaction; a
    # PostgreSQL that stalls does the same to every alarm) must not keep another alarm's
    # page waiting past that page's own deadline: it goes out unchecked (never silent).
    stores = Stores.over(pool)
    stalled = await active_alarm(stores)
    other = await active_alarm(stores, department="Radiology")
    stuck = await stuck_deactivation(observer, stalled.id)

    async def turn(alarm: Alarm, deadline: float) -> LockedRow | None:
        async with locks.page_turn(alarm.id, deadline) as row:
            return row

    first = asyncio.create_task(turn(stalled, 30.0))
    await wait_for_lock_waiter(observer, stalled.id)  # it holds the connection now
    second = asyncio.create_task(turn(other, 0.5))
    # A guard, not a measurement: without the bound the second waits for the first.
    done, _pending = await asyncio.wait({second}, timeout=20.0)
    first_still_waiting = not first.done()
    await stuck.rollback()
    first_row = await asyncio.wait_for(first, DEADLINE)
    await locks.released()

    assert second in done
    assert second.result() is None
    assert first_still_waiting
    assert first_row is not None
    assert first_row.active


async def test_an_open_page_holds_no_pooled_connection(database_dsn: str) -> None:
    # A pool of two: the leaders' connection and one more. Locking the row in a
    # transaction held the second for the whole dial, so 50 alarms paging in the same
    # second queued for the pool.
    pool = await create_pool(
        DatabaseSettings(dsn=SecretStr(database_dsn), pool_min_size=1, pool_max_size=2)
    )
    locks = LeaderLocks(pool, NAMESPACE)
    try:
        alarm = await active_alarm(Stores.over(pool))
        async with (
            locks.page_turn(alarm.id, DEADLINE) as row,
            asyncio.timeout(DEADLINE),
            pool.acquire() as connection,
        ):
            read = await connection.fetchval("SELECT state FROM alarms WHERE id = $1", alarm.id)
        await locks.close()
    finally:
        pool.terminate()

    assert row is not None
    assert row.active
    assert read == "active"
