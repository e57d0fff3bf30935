"""The SQL of leadership: which server pages an alarm, and the lock around each page.

Theory of operation. Several servers may share one database; each active alarm is paged
by exactly one of them, its *leader*, which holds ``pg_try_advisory_lock(namespace,
alarm_id)`` on a connection kept for that alone. Session-level advisory locks end with
their session, so when a leader dies (or its connection does) the lock is free for
another server's takeover scan (fastagi/alarms/leadership.py).

Before each page the leader takes the alarm's *page lock*,
``pg_advisory_lock(PAGE_LOCK, alarm_id)``, on that same connection, then reads the row
(:meth:`LeaderLocks.page_turn`), and holds the lock until the page's devices were dialled
(their INVITEs are out; at most ``[alarm] dial_confirm_timeout`` seconds,
fastagi/alarms/loop.py) and the cycle is counted. A deactivation takes the same key with
``pg_advisory_xact_lock`` before it changes the row (fastagi/store/alarms.py), so it
waits for that page and is acknowledged only after the page reached the phones, and the
leader hangs that page up; a deactivation that committed first is seen by the read,
which comes after the lock, so its snapshot is newer than the deactivation's commit.

A session lock, not a row lock in a transaction: it holds no connection while the page
dials. Locking the row held one pooled connection per page for the whole dial (tens to
hundreds of milliseconds on a loaded host), so 50 alarms paging in the same second
queued for the pool and paged late (docs/performance.md, "Many alarms at once"). The
page lock costs three short statements on the leaders' connection and one pooled UPDATE.

Every alarm's gate shares that connection, so a check that cannot be answered (a
PostgreSQL that stalls) must not hold up the others: a gate's deadline covers its wait
for the connection, after which its page goes out unchecked (never silent), and the
unlock after a page runs in the background, so no loop waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.domain.alarm import ACTIVE
from fastagi.store._common import COUNT_CYCLE, PAGE_LOCK, Connection
from fastagi.store.pool import release_session

logger = logging.getLogger(__name__)

_ACQUIRE_TIMEOUT = 5.0


class LeaderLocks:
    """Session-level advisory locks on one dedicated connection of the pool.

    A session lock is re-entrant (a second pg_try_advisory_lock of the same key in the
    same session succeeds and must be unlocked twice), so we keep the set we hold.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], namespace: int) -> None:
        self._pool = pool
        self._namespace = namespace
        self._connection: Connection | None = None
        self._held: set[int] = set()
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._unlocking: set[asyncio.Task[None]] = set()  # page locks being released

    async def _conn(self) -> Connection:
        if self._connection is None or self._connection.is_closed():
            if self._connection is not None:
                await release_session(self._pool, self._connection)
            self._held.clear()  # a new session holds nothing
            self._connection = await self._pool.acquire()
        return self._connection

    def holds(self, alarm_id: int) -> bool:
        return alarm_id in self._held

    async def acquire(self, alarm_id: int) -> bool:
        async with self._lock:
            if alarm_id in self._held:
                return True
            connection = await self._conn()
            taken = bool(
                await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1::int, $2::int)", self._namespace, alarm_id
                )
            )
            if taken:
                self._held.add(alarm_id)
            return taken

    async def release(self, alarm_id: int) -> None:
        async with self._lock:
            if alarm_id not in self._held or self._connection is None:
                return
            self._held.discard(alarm_id)
            with contextlib.suppress(Exception):
                await self._connection.fetchval(
                    "SELECT pg_advisory_unlock($1::int, $2::int)", self._namespace, alarm_id
                )

    async def healthy(self) -> bool:
        """False when the connection (and so every lock we held) was lost."""
        async with self._lock:
            if self._connection is None:
                return True
            try:
                await self._connection.fetchval("SELECT 1")
            except Exception:
                with contextlib.suppress(Exception):
                    self._connection.terminate()
                self._connection = None
                lost = bool(self._held)
                self._held.clear()
                return not lost
            return True

    @contextlib.asynccontextmanager
    async def page_turn(self, alarm_id: int, deadline: float) -> AsyncIterator[LockedRow | None]:
        """Hold the alarm's page lock and yield its row as read under it, for one page.
        None: PostgreSQL cannot say within ``deadline`` seconds (the caller pages anyway).

        One alarm has one turn at a time (its loop's gates follow each other): the lock is
        re-entrant, so an unlock must pair with this turn's lock."""
        try:
            connection, row = await self._lock_page(alarm_id, deadline)
        except Exception as exc:
            logger.warning("active check of alarm %s impossible: %r", alarm_id, exc)
            yield None
            return
        try:
            count = functools.partial(self._count, alarm_id, deadline)
            if row is None or row["state"] != ACTIVE:
                yield LockedRow(active=False, cycles=0, count=count)
            else:
                yield LockedRow(active=True, cycles=row["cycles"], count=count)
        finally:
            self._unlock_later(connection, alarm_id)

    async def _lock_page(
        self, alarm_id: int, deadline: float
    ) -> tuple[Connection, asyncpg.Record | None]:
        # The deadline covers the wait for the connection too: the gates of every alarm
        # share it, and a page must not wait in line behind others' timeouts when
        # PostgreSQL stalls (each would have waited its own deadline, one after another).
        async with asyncio.timeout(deadline), self._lock:
            connection = await self._conn()
            try:
                await connection.execute(
                    "SELECT pg_advisory_lock($1::int, $2::int)", PAGE_LOCK, alarm_id
                )
                # A statement of its own: its snapshot is taken once the lock is ours,
                # so it sees a deactivation that held the lock before us.
                row = await connection.fetchrow(
                    "SELECT state, cycles FROM alarms WHERE id = $1", alarm_id
                )
            except BaseException:
                # The lock may have been granted as its wait timed out or was cancelled:
                # a lock left held would stall every deactivation of the alarm.
                self._unlock_later(connection, alarm_id)
                raise
            return connection, row

    def _unlock_later(self, connection: Connection, alarm_id: int) -> None:
        """Release the page lock as soon as the connection is free, without holding up
        the caller: a loop's next page must not wait behind others' statements."""
        task = asyncio.create_task(self._unlock(connection, alarm_id))
        self._unlocking.add(task)
        task.add_done_callback(self._unlocking.discard)

    async def _unlock(self, connection: Connection, alarm_id: int) -> None:
        """Release the page lock (not held: a no-op). A connection lost or replaced in
        the meantime took the lock with its session."""
        async with self._lock:
            if connection is not self._connection or connection.is_closed():
                return
            try:
                await connection.fetchval(
                    "SELECT pg_advisory_unlock($1::int, $2::int)",
                    PAGE_LOCK,
                    alarm_id,
                    timeout=_ACQUIRE_TIMEOUT,
                )
            except Exception as exc:
                # Its session, and so the lock, ends with it.
                logger.warning(
                    "page lock of alarm %s not released; closing its session: %r", alarm_id, exc
                )
                connection.terminate()

    async def _count(
        self, alarm_id: int, deadline: float, cycle: int, started_at: datetime
    ) -> bool:
        """Count the cycle on the row (a pooled statement: the leaders' connection never
        waits for a row lock). False when that failed: the cycle's event counts it later."""
        try:
            async with asyncio.timeout(deadline):
                await self._pool.execute(COUNT_CYCLE, alarm_id, cycle, started_at)
        except Exception as exc:
            logger.warning(
                "cycle %s of alarm %s not counted at its start: %r", cycle, alarm_id, exc
            )
            return False
        return True

    async def released(self) -> None:
        """Wait until the page locks being released are."""
        await asyncio.gather(*self._unlocking)

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                # The reset unlocks them all (pg_advisory_unlock_all); a connection that
                # cannot be reset is closed, which ends its locks too.
                await release_session(self._pool, self._connection)
                self._connection = None
                self._held.clear()
        await self.released()  # they find the session gone, and their locks with it


@dataclass(frozen=True)
class LockedRow:
    """The alarm row as read under its lock, before one page."""

    active: bool
    cycles: int
    # count(cycle, started_at): once the page's devices were dialled, count it on the
    # row; False when that failed (the cycle's event counts it later). Never raises.
    count: Callable[[int, datetime], Awaitable[bool]]
