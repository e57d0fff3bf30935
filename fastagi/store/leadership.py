"""The SQL of leadership: which server pages an alarm, and the row lock around each page.

Theory of operation. Several servers may share one database; each active alarm is paged
by exactly one of them, its *leader*, which holds ``pg_try_advisory_lock(namespace,
alarm_id)`` on a connection kept for that alone. Session-level advisory locks end with
their session, so when a leader dies (or its connection does) the lock is free for
another server's takeover scan (fastagi/alarms/leadership.py).

Before each page the leader locks the alarm row (:func:`locked_alarm_row`) in a
transaction that lasts until the page's devices were dialled (their INVITEs are out; at
most ``[alarm] dial_confirm_timeout`` seconds, fastagi/alarms/loop.py) and the cycle is
counted: a concurrent deactivation (it locks the row first, fastagi/store/alarms.py)
waits for it, so it is acknowledged only after that page reached the phones, and the
leader hangs that page up; a deactivation that committed first is seen here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.domain.alarm import ACTIVE
from fastagi.store._common import COUNT_CYCLE, Connection
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

    async def close(self) -> None:
        async with self._lock:
            if self._connection is None:
                return
            # The reset unlocks them all (pg_advisory_unlock_all); a connection that
            # cannot be reset is closed, which ends its locks too.
            await release_session(self._pool, self._connection)
            self._connection = None
            self._held.clear()


@dataclass(frozen=True)
class LockedRow:
    """The alarm row as read under its lock, before one page."""

    active: bool
    cycles: int
    # count(cycle, started_at): once the page started, count it on the row and commit
    # (ending the lock); False when that failed (the cycle's event counts it later).
    # Never raises.
    count: Callable[[int, datetime], Awaitable[bool]]


@contextlib.asynccontextmanager
async def locked_alarm_row(
    pool: asyncpg.Pool[asyncpg.Record], alarm_id: int, deadline: float
) -> AsyncIterator[LockedRow | None]:
    """Lock the alarm row (``FOR NO KEY UPDATE``: the lock its UPDATE takes anyway) for
    one page. None: PostgreSQL cannot say (the caller pages anyway)."""
    try:
        connection = await pool.acquire(timeout=_ACQUIRE_TIMEOUT)
    except Exception as exc:
        logger.warning("active check of alarm %s impossible: %s", alarm_id, exc)
        yield None
        return
    try:
        transaction = connection.transaction()
        try:
            await transaction.start()
            row = await connection.fetchrow(
                "SELECT state, cycles FROM alarms WHERE id = $1 FOR NO KEY UPDATE",
                alarm_id,
                timeout=deadline,
            )
        except Exception as exc:
            logger.warning("active check of alarm %s failed: %s", alarm_id, exc)
            with contextlib.suppress(Exception):
                await transaction.rollback()
            yield None
            return

        async def count(cycle: int, started_at: datetime) -> bool:
            try:
                async with asyncio.timeout(deadline):
                    await connection.execute(COUNT_CYCLE, alarm_id, cycle, started_at)
                    await transaction.commit()
            except Exception as exc:
                # Counted with the cycle's event, when it ends (or is replayed).
                logger.warning(
                    "cycle %s of alarm %s not counted at its start: %r", cycle, alarm_id, exc
                )
                return False
            return True

        try:
            if row is None or row["state"] != ACTIVE:
                yield LockedRow(active=False, cycles=0, count=count)
            else:
                yield LockedRow(active=True, cycles=row["cycles"], count=count)
        finally:
            # Nothing to undo after a commit (rollback() then just raises).
            with contextlib.suppress(Exception):
                await transaction.rollback()
    finally:
        await pool.release(connection)
