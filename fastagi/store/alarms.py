"""Alarm rows (sql/002_alarms.sql ``alarms``): activation, cycles, deactivation.

Theory of operation: alarm state is rows of ``alarms``; the partial unique index
``alarms_one_active_per_key`` lets at most one alarm per key be active, so two servers (or
two calls) activating the same department at once end with one alarm, the second being a
re-trigger. Each state change writes its history events in the same transaction, and a
deactivation also sends ``NOTIFY fastagi_alarms`` (fastagi/store/changes.py), delivered at
commit, so the server running that alarm's paging loop stops it at once.
Values always travel as query parameters; the only SQL text is in this module.

Drills (sql/007_drills.sql) are rows of the same table, flagged, under a key of their
own (``drill:department:<id>``). Starting one and a real alarm making a drill yield
(:meth:`AlarmStore.start_drill`, :meth:`AlarmStore.drills_to_yield`) take one
transaction-level advisory lock (a start exclusively, a yield shared), so neither misses
the other: a drill never starts unseen beside a real alarm of its department.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime

import asyncpg

from fastagi.domain.alarm import Alarm
from fastagi.domain.drill import Drill, drill_key
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store._common import COUNT_CYCLE, PAGE_LOCK, StoreError
from fastagi.store.changes import ALARMS_CHANNEL, AlarmChange, notify_alarm_change
from fastagi.store.history import cycle_started_at, for_alarm, insert_event
from fastagi.store.pool import release_session

logger = logging.getLogger(__name__)

CHANNEL = ALARMS_CHANNEL
_ACTIVATE_ATTEMPTS = 5
# The drill lock ("DRL"; the leader locks use [alarm] lock_namespace and alarm ids), a
# transaction-level advisory lock: a drill start takes it exclusively, a real alarm's
# yield shared. Only a start and a yield must not pass each other; yields among
# themselves need not wait: 1,000 alarms activated at once queued on it, each holding a
# pooled connection, and starved the pool until activations timed out.
_DRILL_LOCK = 0x44524C


class DrillStartOutcome(enum.Enum):
    STARTED = "started"
    ALARM_ACTIVE = "a real alarm of the department is active"
    DRILL_RUNNING = "a drill of the department runs already"
    SLOT_TAKEN = "the scheduled slot's drill was started already"


@dataclass(frozen=True)
class DrillStart:
    outcome: DrillStartOutcome
    # STARTED: the drill; ALARM_ACTIVE: that alarm; DRILL_RUNNING: the running drill.
    alarm: Alarm | None


@dataclass(frozen=True)
class AlarmTally:
    """Alarms (or drills) of one department activated in a period."""

    drill: bool
    department_name: str
    alarms: int
    pages: int
    # Seconds from activation to deactivation, median over the ended ones (None: none).
    median_seconds: float | None
    still_active: int


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
                alarm = alarm_from_row(row)
                skipped = EventKind.RETRIGGERED if created else EventKind.ACTIVATED
                for event in events:
                    if event.kind is not skipped:
                        await insert_event(connection, for_alarm(event, alarm.id))
                return alarm, created
        raise RuntimeError(f"could not activate {alarm_key!r}: it keeps changing state")

    async def start_drill(
        self,
        department_id: int,
        department_name: str,
        extension: str,
        drill: Drill,
        event: HistoryEvent,
        *,
        notify: bool = False,
    ) -> DrillStart:
        """Start a drill of the department unless a real alarm of it (or of no
        department: it pages every group) is active, or a drill of it runs, or a scheduled
        drill's slot was taken by another server; ``event`` (``drill_started``) is written
        with it. ``notify``: tell the running servers, so one leads it at once (a drill
        started outside a server, by the CLI)."""
        key = drill_key(department_id)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1, 0)", _DRILL_LOCK)
            real = await connection.fetchrow(
                """
                SELECT * FROM alarms
                WHERE state = 'active' AND NOT drill
                  AND (department_id = $1 OR department_id IS NULL)
                ORDER BY id LIMIT 1
                """,
                department_id,
            )
            if real is not None:
                return DrillStart(DrillStartOutcome.ALARM_ACTIVE, alarm_from_row(real))
            row = await connection.fetchrow(
                """
                INSERT INTO alarms (alarm_key, department_id, department_name, extension,
                                    drill, drill_cycles, drill_devices, drill_emergency,
                                    drill_requested_by, drill_scheduled_for)
                VALUES ($1, $2, $3, $4, true, $5, $6, $7, $8, $9)
                ON CONFLICT DO NOTHING
                RETURNING *
                """,
                key,
                department_id,
                department_name,
                extension,
                drill.cycles,
                list(drill.devices) or None,
                drill.emergency,
                drill.requested_by,
                drill.scheduled_for,
            )
            if row is None:
                if drill.scheduled_for is not None and await connection.fetchval(
                    "SELECT EXISTS (SELECT FROM alarms"
                    " WHERE alarm_key = $1 AND drill_scheduled_for = $2)",
                    key,
                    drill.scheduled_for,
                ):
                    # Another server's, running or ended: not a refusal to record.
                    return DrillStart(DrillStartOutcome.SLOT_TAKEN, None)
                running = await connection.fetchrow(
                    "SELECT * FROM alarms WHERE alarm_key = $1 AND state = 'active'", key
                )
                if running is not None:
                    return DrillStart(DrillStartOutcome.DRILL_RUNNING, alarm_from_row(running))
                raise StoreError(f"cannot start a drill of {department_name!r}: try again")
            alarm = alarm_from_row(row)
            await insert_event(connection, for_alarm(event, alarm.id))
            if notify:
                await notify_alarm_change(connection, AlarmChange(alarm.id, started=True))
            return DrillStart(DrillStartOutcome.STARTED, alarm)

    async def drills_to_yield(self, department_id: int | None) -> list[Alarm]:
        """The active drills a real alarm of ``department_id`` stops: the department's,
        or every drill for an alarm of no department (it pages every paging group).
        Under the drill lock, shared (the alarm's row is committed before): a drill
        starting meanwhile is either seen here or sees the real alarm and does not start.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            # Read committed: the SELECT below takes its snapshot after the lock is held.
            await connection.execute("SELECT pg_advisory_xact_lock_shared($1, 0)", _DRILL_LOCK)
            rows = await connection.fetch(
                """
                SELECT * FROM alarms
                WHERE drill AND state = 'active' AND ($1::int IS NULL OR department_id = $1)
                ORDER BY id
                """,
                department_id,
            )
        return [alarm_from_row(row) for row in rows]

    async def tallies(self, since: datetime, until: datetime) -> list[AlarmTally]:
        """Alarms and drills activated in ``[since, until)``, per kind and department:
        real alarm statistics never count a drill."""
        rows = await self._pool.fetch(
            """
            SELECT drill, department_name, count(*) AS alarms, sum(cycles) AS pages,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM deactivated_at - activated_at))
                       AS median_seconds,
                   count(*) FILTER (WHERE state = 'active') AS still_active
            FROM alarms
            WHERE activated_at >= $1 AND activated_at < $2
            GROUP BY drill, department_name
            ORDER BY drill, department_name
            """,
            since,
            until,
        )
        return [
            AlarmTally(
                drill=row["drill"],
                department_name=row["department_name"],
                alarms=row["alarms"],
                pages=int(row["pages"] or 0),
                median_seconds=(
                    None if row["median_seconds"] is None else float(row["median_seconds"])
                ),
                still_active=row["still_active"],
            )
            for row in rows
        ]

    async def drills(self, since: datetime, until: datetime) -> list[Alarm]:
        """The drills activated in ``[since, until)``, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM alarms WHERE drill AND activated_at >= $1 AND activated_at < $2
            ORDER BY activated_at, id
            """,
            since,
            until,
        )
        return [alarm_from_row(row) for row in rows]

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

        The alarm's page lock comes first: a page being started holds it until its
        devices were dialled (fastagi/store/leadership.py), so a deactivation waits for
        that page and its leader hangs it up. Then ``deactivated_at`` (and the event's
        ``occurred_at``) is the moment the row changes, after that wait: no page starts
        after it.
        ``finished_by``: the server that stops paging, puts out the lamps and tells the
        listeners itself (None: the CLI; the alarm's leader does it on the NOTIFY).
        """
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock($1::int, $2::int)", PAGE_LOCK, alarm_id
            )
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
            return alarm_from_row(row)

    async def active_alarms(self) -> list[Alarm]:
        rows = await self._pool.fetch(
            "SELECT * FROM alarms WHERE state = 'active' ORDER BY activated_at, id"
        )
        return [alarm_from_row(row) for row in rows]

    async def recent_alarms(self, limit: int = 50) -> list[Alarm]:
        """The latest alarms, active or not, newest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM alarms ORDER BY activated_at DESC, id DESC LIMIT $1", limit
        )
        return [alarm_from_row(row) for row in rows]

    async def get_alarm(self, alarm_id: int) -> Alarm | None:
        row = await self._pool.fetchrow("SELECT * FROM alarms WHERE id = $1", alarm_id)
        return None if row is None else alarm_from_row(row)

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
            await release_session(self._pool, connection)
            raise

        async def close() -> None:
            # The reset UNLISTENs and drops on_notify.
            await release_session(self._pool, connection)

        return close


def alarm_from_row(row: asyncpg.Record) -> Alarm:
    """An :class:`Alarm` from a row of ``alarms`` (a drill's with its :class:`Drill`)."""
    drill = None
    if row["drill"]:
        drill = Drill(
            cycles=row["drill_cycles"],
            devices=tuple(row["drill_devices"] or ()),
            emergency=row["drill_emergency"],
            requested_by=row["drill_requested_by"],
            scheduled_for=row["drill_scheduled_for"],
        )
    return Alarm(**{f.name: row[f.name] for f in fields(Alarm) if f.name != "drill"}, drill=drill)
