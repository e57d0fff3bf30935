"""Alarm rows (sql/002_alarms.sql ``alarms``): activation, cycles, deactivation.

Theory of operation: alarm state is rows of ``alarms``; the partial unique index
``alarms_one_active_per_key`` lets at most one alarm per key be active, so two servers (or
two calls) activating the same department at once end with one alarm, the second being a
re-trigger. Each state change writes its history events in the same transaction, and a
deactivation also sends ``NOTIFY fastagi_alarms`` (fastagi/store/changes.py), delivered at
commit, so the server running that alarm's paging loop stops it at once.
Values always travel as query parameters; the only SQL text is in this module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import asyncpg

from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store._common import COUNT_CYCLE, StoreError, row_to
from fastagi.store.changes import ALARMS_CHANNEL, AlarmChange, notify_alarm_change
from fastagi.store.history import cycle_started_at, for_alarm, insert_event

logger = logging.getLogger(__name__)

CHANNEL = ALARMS_CHANNEL
_ACTIVATE_ATTEMPTS = 5


class AlarmStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def activate(
        self,
        alarm_key: str,
        department_id: int | None,
        department_name: str,
        extension: str,
        events: Sequence[HistoryEvent] = (),
    ) -> tuple[Alarm, bool]:
        """The key's active alarm, created unless one exists; and whether it was created.

        In one transaction with the alarm, ``events`` are written, those without an
        alarm_id getting this alarm's. An ``activated`` event is written only when the
        alarm was created and a ``retriggered`` one only when it already existed, so the
        caller passes both and the one that happened is kept; other kinds always are.
        """
        for _ in range(_ACTIVATE_ATTEMPTS):
            async with self._pool.acquire() as connection, connection.transaction():
                # A concurrent activation of the key waits here for the other
                # transaction, then does nothing if that one committed.
                row = await connection.fetchrow(
                    """
                    INSERT INTO alarms (alarm_key, department_id, department_name, extension)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (alarm_key) WHERE state = 'active' DO NOTHING
                    RETURNING *
                    """,
                    alarm_key,
                    department_id,
                    department_name,
                    extension,
                )
                created = row is not None
                if row is None:
                    # Locked, so a deactivation waits for our re-trigger event.
                    row = await connection.fetchrow(
                        """
                        SELECT * FROM alarms
                        WHERE alarm_key = $1 AND state = 'active'
                        FOR UPDATE
                        """,
                        alarm_key,
                    )
                    if row is None:
                        continue  # deactivated in between: try again
                alarm = row_to(Alarm, row)
                skipped = EventKind.RETRIGGERED if created else EventKind.ACTIVATED
                for event in events:
                    if event.kind is not skipped:
                        await insert_event(connection, for_alarm(event, alarm.id))
                return alarm, created
        raise RuntimeError(f"could not activate {alarm_key!r}: it keeps changing state")

    async def record_cycle(self, alarm_id: int, event: HistoryEvent) -> None:
        """Write a paging cycle's event and count it on the alarm, in one transaction.

        The paging loop counts a cycle when it starts (fastagi/alarms/loop.py), so this
        usually finds it counted: ``cycles`` becomes at least the event's ``cycle`` (one
        more, for an event without a number) and ``last_cycle_at`` at least the page's
        start, never less. A cycle that was not counted at its start (PostgreSQL could not
        say) is counted here, or when its journalled event is replayed; never twice.
        """
        cycle = event.details.get("cycle")
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                COUNT_CYCLE,
                alarm_id,
                cycle if isinstance(cycle, int) else None,
                cycle_started_at(event),
            )
            if status == "UPDATE 0":
                raise StoreError(f"unknown alarm {alarm_id}")
            await insert_event(connection, for_alarm(event, alarm_id))

    async def deactivate(
        self,
        alarm_id: int,
        by: str,
        reason: str,
        event: HistoryEvent,
        *,
        finished_by: str | None = None,
    ) -> Alarm | None:
        """Deactivate an active alarm, write ``event`` and notify the running servers.

        None, writing nothing, when the alarm is unknown or no longer active.

        The row lock comes first: a page being started holds it until its devices were
        dialled (fastagi/store/leadership.py), so a deactivation waits for that page and
        its leader hangs it up. Then ``deactivated_at`` (and the event's ``occurred_at``)
        is the moment the row changes, after that wait: no page starts after it.
        ``finished_by``: the server that stops paging, puts out the lamps and tells the
        listeners itself (None: the CLI; the alarm's leader does it on the NOTIFY).
        """
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT FROM alarms WHERE id = $1 FOR NO KEY UPDATE", alarm_id)
            row = await connection.fetchrow(
                """
                UPDATE alarms
                SET state = 'deactivated', deactivated_at = clock_timestamp(),
                    deactivated_by = $2, deactivation_reason = $3
                WHERE id = $1 AND state = 'active'
                RETURNING *
                """,
                alarm_id,
                by,
                reason,
            )
            if row is None:
                return None
            stamped = replace(for_alarm(event, alarm_id), occurred_at=row["deactivated_at"])
            await insert_event(connection, stamped)
            await notify_alarm_change(connection, AlarmChange(alarm_id, finished_by))
            return row_to(Alarm, row)

    async def active_alarms(self) -> list[Alarm]:
        rows = await self._pool.fetch(
            "SELECT * FROM alarms WHERE state = 'active' ORDER BY activated_at, id"
        )
        return [row_to(Alarm, row) for row in rows]

    async def recent_alarms(self, limit: int = 50) -> list[Alarm]:
        """The latest alarms, active or not, newest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM alarms ORDER BY activated_at DESC, id DESC LIMIT $1", limit
        )
        return [row_to(Alarm, row) for row in rows]

    async def get_alarm(self, alarm_id: int) -> Alarm | None:
        row = await self._pool.fetchrow("SELECT * FROM alarms WHERE id = $1", alarm_id)
        return None if row is None else row_to(Alarm, row)

    async def is_active(self, alarm_id: int) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT FROM alarms WHERE id = $1 AND state = 'active')",
                alarm_id,
            )
        )

    async def listen_changes(
        self, callback: Callable[[int], None]
    ) -> Callable[[], Awaitable[None]]:
        """Call ``callback(alarm_id)`` on each ``NOTIFY fastagi_alarms`` (a deactivation).

        Holds one pool connection until the returned closer is awaited, and is not
        re-armed when that connection is lost: the servers use
        :class:`~fastagi.store.changes.ChangeListener`. The callback runs on the event
        loop and must not block; a payload that is not ours is logged and ignored.
        """
        connection = await self._pool.acquire()

        def on_notify(_connection: object, _pid: int, _channel: str, payload: object) -> None:
            change = AlarmChange.parse(payload)
            if change is None:
                logger.warning("ignored a %s notification: %r", CHANNEL, payload)
                return
            callback(change.alarm_id)

        try:
            await connection.add_listener(CHANNEL, on_notify)
        except BaseException:
            await self._pool.release(connection)
            raise

        async def close() -> None:
            try:
                if not connection.is_closed():
                    await connection.remove_listener(CHANNEL, on_notify)
            finally:
                await self._pool.release(connection)

        return close
