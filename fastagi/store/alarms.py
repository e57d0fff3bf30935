"""The alarm domain's tables (sql/002_alarms.sql): every query of it lives here.

Theory of operation: alarm state is rows of ``alarms``; the partial unique index
``alarms_one_active_per_key`` lets at most one alarm per key be active, so two servers (or
two calls) activating the same department at once end with one alarm, the second being a
re-trigger. Each state change writes its history events in the same transaction, and a
deactivation also sends ``NOTIFY fastagi_alarms, '<id>'``, delivered at commit, so every
server running that alarm's paging loop stops it at once (:meth:`AlarmStore.listen_changes`).

Configuration (departments, paging groups, intervals, the policy) is read fresh by each
call that needs it, because administrators change it while alarms run. Values always
travel as query parameters; the only SQL text is the constants below.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from uuid import UUID

import asyncpg

from fastagi.domain.directory import (
    Department,
    Directory,
    ExtensionPattern,
    is_extension,
)
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.pins import is_pin_hash

logger = logging.getLogger(__name__)

CHANNEL = "fastagi_alarms"
ACTIVE = "active"
DEACTIVATED = "deactivated"
# Bounds of sql/002_alarms.sql, checked here first for a clear message.
MIN_INTERVAL, MAX_INTERVAL = 5, 3600
MIN_ATTEMPTS, MAX_ATTEMPTS = 1, 10
MAX_LOCKOUT_SECONDS = 86400
NO_ANSWER_POLICIES = ("cancel", "activate")
DEVICE = re.compile(r"[A-Za-z0-9_]+/[A-Za-z0-9_.@:+-]+")
_ACTIVATE_ATTEMPTS = 5

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
_T = TypeVar("_T")


class StoreError(ValueError):
    """A request the data refuses (unknown name, duplicate, out of range): the message is
    for the administrator, as it is."""


# -- rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alarm:
    id: int
    alarm_key: str
    department_id: int | None
    department_name: str
    extension: str
    state: str
    activated_at: datetime
    deactivated_at: datetime | None
    deactivated_by: str | None
    deactivation_reason: str | None
    cycles: int
    last_cycle_at: datetime | None

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE


@dataclass(frozen=True)
class AlarmSettings:
    default_interval_seconds: int
    no_answer_policy: str  # 'cancel' or 'activate'
    confirmation_attempts: int
    pin_attempts: int
    lockout_seconds: int
    updated_at: datetime


@dataclass(frozen=True)
class PagingGroup:
    id: int
    name: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class DepartmentInfo:
    id: int
    name: str
    interval_seconds: int | None  # None: the global default
    paging_group: str | None
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Deactivator:
    """An extension allowed to deactivate alarms. The PIN hash stays in the database."""

    extension: str
    created_at: datetime
    updated_at: datetime
    locked_until: datetime | None  # set while a lockout runs


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event_id: UUID
    occurred_at: datetime
    alarm_id: int | None
    kind: str  # an EventKind value; str so rows of a newer version still load
    extension: str | None
    department: str | None
    details: dict[str, Any]


def _row(cls: type[_T], row: asyncpg.Record) -> _T:
    """A row dataclass from a record that may hold more columns than it has fields."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        event_id=row["event_id"],
        occurred_at=row["occurred_at"],
        alarm_id=row["alarm_id"],
        kind=row["kind"],
        extension=row["extension"],
        department=row["department"],
        details=json.loads(row["details"]),
    )


# -- the store -------------------------------------------------------------------------


class AlarmStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    # -- reading configuration -----------------------------------------------------------

    async def load_directory(self) -> Directory:
        """Departments, their paging devices and extension mappings, as one snapshot."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            default = await connection.fetchval(
                "SELECT default_interval_seconds FROM alarm_settings"
            )
            departments = await connection.fetch(
                """
                SELECT d.id, d.name, d.paging_group_id, d.interval_seconds,
                       g.name AS paging_group,
                       coalesce(array_agg(pd.device ORDER BY pd.device)
                                FILTER (WHERE pd.device IS NOT NULL), '{}') AS devices
                FROM departments d
                LEFT JOIN paging_groups g ON g.id = d.paging_group_id
                LEFT JOIN paging_group_devices pd ON pd.group_id = d.paging_group_id
                GROUP BY d.id, g.name
                ORDER BY d.id
                """
            )
            mappings = await connection.fetch(
                "SELECT department_id, pattern FROM department_extensions ORDER BY id"
            )
        return Directory.build(
            departments=(
                Department(
                    id=row["id"],
                    name=row["name"],
                    paging_group_id=row["paging_group_id"],
                    interval_seconds=row["interval_seconds"],
                    devices=tuple(row["devices"]),
                    paging_group=row["paging_group"],
                )
                for row in departments
            ),
            mappings=((row["department_id"], row["pattern"]) for row in mappings),
            default_interval_seconds=default,
        )

    async def load_settings(self) -> AlarmSettings:
        row = await self._pool.fetchrow("SELECT * FROM alarm_settings")
        assert row is not None, "002_alarms.sql inserts the one settings row"
        return _row(AlarmSettings, row)

    async def interval_seconds(self, alarm: Alarm) -> int:
        """The alarm's paging interval now: its department's, else the global default."""
        seconds: int = await self._pool.fetchval(
            """
            SELECT coalesce(
                (SELECT interval_seconds FROM departments WHERE id = $1),
                default_interval_seconds)
            FROM alarm_settings
            """,
            alarm.department_id,
        )
        return seconds

    async def paging_devices(self, alarm: Alarm) -> tuple[str, ...]:
        """The devices of the alarm's department's paging group now (may be empty)."""
        rows = await self._pool.fetch(
            """
            SELECT pd.device
            FROM departments d
            JOIN paging_group_devices pd ON pd.group_id = d.paging_group_id
            WHERE d.id = $1
            ORDER BY pd.device
            """,
            alarm.department_id,
        )
        return tuple(row["device"] for row in rows)

    # -- history ------------------------------------------------------------------------

    async def append_event(self, event: HistoryEvent) -> bool:
        """Write one event; False when its event_id was already written (a replay)."""
        async with self._pool.acquire() as connection:
            return await _insert_event(connection, event)

    async def append_events(self, events: Iterable[HistoryEvent]) -> int:
        """Write events in one transaction; return how many were new."""
        async with self._pool.acquire() as connection, connection.transaction():
            return sum([await _insert_event(connection, event) for event in events])

    async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
        """Write journalled events (fastagi/store/journal.py) in one transaction; return
        how many were new. A new ``page_cycle`` event also counts its cycle on the alarm
        row, as :meth:`record_cycle` does (``cycles`` only grows to the event's number: a
        replay repeated, or a cycle counted at its start, is never counted twice)."""
        async with self._pool.acquire() as connection, connection.transaction():
            new = 0
            for event in events:
                if not await _insert_event(connection, event):
                    continue
                new += 1
                cycle = event.details.get("cycle")
                if (
                    event.kind is EventKind.PAGE_CYCLE
                    and event.alarm_id is not None
                    and isinstance(cycle, int)
                    and not event.details.get("merged")
                ):
                    await connection.execute(
                        _COUNT_CYCLE, event.alarm_id, cycle, cycle_started_at(event)
                    )
            return new

    async def last_recorded_cycle(self, alarm_id: int) -> int:
        """The highest cycle number among the alarm's ``page_cycle`` events (0: none)."""
        cycle: int = await self._pool.fetchval(
            """
            SELECT coalesce(max((details ->> 'cycle')::int), 0) FROM alarm_events
            WHERE alarm_id = $1 AND kind = 'page_cycle'
              AND jsonb_typeof(details -> 'cycle') = 'number'
            """,
            alarm_id,
        )
        return cycle

    async def timeline(self, alarm_id: int) -> list[StoredEvent]:
        """The alarm's story, oldest first: its own events, and those of its calls.

        A call's steps (triggered, prompt_played, confirmed, a wrong PIN, ...) happen
        before or outside any alarm and have no alarm id; the call's uniqueid links them.
        Every call that appears in the alarm's own events (activated, retriggered,
        deactivated carry it) brings its events without an alarm id along.
        """
        rows = await self._pool.fetch(
            """
            WITH own AS (
                SELECT * FROM alarm_events WHERE alarm_id = $1
            ), calls AS (
                SELECT DISTINCT details ->> 'uniqueid' AS uniqueid
                FROM own
                WHERE details ->> 'uniqueid' IS NOT NULL
            )
            SELECT * FROM own
            UNION ALL
            SELECT e.* FROM alarm_events e
            JOIN calls c ON e.details ->> 'uniqueid' = c.uniqueid
            WHERE e.alarm_id IS NULL
            ORDER BY occurred_at, id
            """,
            alarm_id,
        )
        return [_event(row) for row in rows]

    async def history(self, since: datetime, until: datetime) -> list[StoredEvent]:
        """Every event with ``since <= occurred_at < until``, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM alarm_events
            WHERE occurred_at >= $1 AND occurred_at < $2
            ORDER BY occurred_at, id
            """,
            since,
            until,
        )
        return [_event(row) for row in rows]

    # -- alarms -------------------------------------------------------------------------

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
                alarm = _row(Alarm, row)
                skipped = EventKind.RETRIGGERED if created else EventKind.ACTIVATED
                for event in events:
                    if event.kind is not skipped:
                        await _insert_event(connection, _for_alarm(event, alarm.id))
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
                _COUNT_CYCLE,
                alarm_id,
                cycle if isinstance(cycle, int) else None,
                cycle_started_at(event),
            )
            if status == "UPDATE 0":
                raise StoreError(f"unknown alarm {alarm_id}")
            await _insert_event(connection, _for_alarm(event, alarm_id))

    async def deactivate(
        self, alarm_id: int, by: str, reason: str, event: HistoryEvent
    ) -> Alarm | None:
        """Deactivate an active alarm, write ``event`` and notify the running servers.

        None, writing nothing, when the alarm is unknown or no longer active.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """
                UPDATE alarms
                SET state = 'deactivated', deactivated_at = now(),
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
            await _insert_event(connection, _for_alarm(event, alarm_id))
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, str(alarm_id))
            return _row(Alarm, row)

    async def active_alarms(self) -> list[Alarm]:
        rows = await self._pool.fetch(
            "SELECT * FROM alarms WHERE state = 'active' ORDER BY activated_at, id"
        )
        return [_row(Alarm, row) for row in rows]

    async def recent_alarms(self, limit: int = 50) -> list[Alarm]:
        """The latest alarms, active or not, newest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM alarms ORDER BY activated_at DESC, id DESC LIMIT $1", limit
        )
        return [_row(Alarm, row) for row in rows]

    async def get_alarm(self, alarm_id: int) -> Alarm | None:
        row = await self._pool.fetchrow("SELECT * FROM alarms WHERE id = $1", alarm_id)
        return None if row is None else _row(Alarm, row)

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

        Holds one pool connection until the returned closer is awaited. The callback
        runs on the event loop and must not block; a payload that is not an alarm id is
        logged and ignored.
        """
        connection = await self._pool.acquire()

        def on_notify(_connection: object, _pid: int, _channel: str, payload: object) -> None:
            try:
                alarm_id = int(str(payload))
            except ValueError:
                logger.warning("ignored a %s notification: %r", CHANNEL, payload)
                return
            callback(alarm_id)

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

    # -- deactivators and lockouts -------------------------------------------------------

    async def deactivator_pin_hash(self, extension: str) -> str | None:
        pin_hash: str | None = await self._pool.fetchval(
            "SELECT pin_hash FROM deactivators WHERE extension = $1", extension
        )
        return pin_hash

    async def set_deactivator(self, extension: str, pin_hash: str) -> bool:
        """Allow ``extension`` to deactivate with the PIN of ``pin_hash``; True if new."""
        _check_extension(extension)
        if not is_pin_hash(pin_hash):
            raise StoreError("not a PIN hash: make one with fastagi.domain.pins.hash_pin")
        created: bool = await self._pool.fetchval(
            """
            INSERT INTO deactivators (extension, pin_hash) VALUES ($1, $2)
            ON CONFLICT (extension) DO UPDATE
                SET pin_hash = excluded.pin_hash, updated_at = now()
            RETURNING xmax = 0
            """,
            extension,
            pin_hash,
        )
        return created

    async def remove_deactivator(self, extension: str) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                "DELETE FROM deactivators WHERE extension = $1", extension
            )
            if status == "DELETE 0":
                raise StoreError(f"extension '{extension}' is not a deactivator")
            await connection.execute(
                "DELETE FROM deactivation_lockouts WHERE extension = $1", extension
            )

    async def list_deactivators(self) -> list[Deactivator]:
        rows = await self._pool.fetch(
            """
            SELECT d.extension, d.created_at, d.updated_at,
                   CASE WHEN l.locked_until > now() THEN l.locked_until END AS locked_until
            FROM deactivators d
            LEFT JOIN deactivation_lockouts l USING (extension)
            ORDER BY length(d.extension), d.extension
            """
        )
        return [_row(Deactivator, row) for row in rows]

    async def lockout_until(self, extension: str) -> datetime | None:
        """When the extension's lockout ends, while one runs; else None."""
        until: datetime | None = await self._pool.fetchval(
            """
            SELECT locked_until FROM deactivation_lockouts
            WHERE extension = $1 AND locked_until > now()
            """,
            extension,
        )
        return until

    async def record_pin_failure(
        self, extension: str, max_failures: int, lockout_seconds: int
    ) -> datetime | None:
        """Count a wrong PIN; return the end of the lockout when this failure starts one.

        Failures are counted per extension across calls and forgotten ``lockout_seconds``
        after the last one; the ``max_failures``-th locks the extension out for
        ``lockout_seconds`` and starts the count again. ``lockout_seconds=0``: no lockout.
        """
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if lockout_seconds <= 0:
            return None
        async with self._pool.acquire() as connection, connection.transaction():
            failures: int = await connection.fetchval(
                """
                INSERT INTO deactivation_lockouts AS l (extension, failures, last_failure_at)
                VALUES ($1, 1, now())
                ON CONFLICT (extension) DO UPDATE SET
                    failures = CASE
                        WHEN l.last_failure_at > now() - make_interval(secs => $2)
                        THEN l.failures + 1 ELSE 1 END,
                    last_failure_at = now()
                RETURNING failures
                """,
                extension,
                float(lockout_seconds),
            )
            if failures < max_failures:
                return None
            until: datetime = await connection.fetchval(
                """
                UPDATE deactivation_lockouts
                SET failures = 0, locked_until = now() + make_interval(secs => $2)
                WHERE extension = $1
                RETURNING locked_until
                """,
                extension,
                float(lockout_seconds),
            )
            return until

    async def global_lockout_until(
        self, max_failures: int, window_seconds: float, lockout_seconds: float
    ) -> datetime | None:
        """When the system-wide PIN lockout ends, while one runs; else None.

        Counted from the ``deactivation_failed`` events of every extension and every
        server (the history is shared, so the limit holds across instances): whenever
        ``max_failures`` wrong PINs fell within ``window_seconds``, every deactivation is
        refused until ``lockout_seconds`` after the last of them. ``max_failures=0``: off.
        """
        if max_failures < 1 or lockout_seconds <= 0:
            return None
        until: datetime | None = await self._pool.fetchval(
            """
            SELECT max(occurred_at) + make_interval(secs => $3::float8)
            FROM (
                SELECT occurred_at,
                       lead(occurred_at, $1::int - 1) OVER (ORDER BY occurred_at DESC) AS nth
                FROM alarm_events
                WHERE kind = 'deactivation_failed'
                  AND occurred_at > now() - make_interval(secs => $2::float8 + $3::float8)
            ) failures
            WHERE nth IS NOT NULL AND occurred_at - nth <= make_interval(secs => $2::float8)
            HAVING max(occurred_at) + make_interval(secs => $3::float8) > now()
            """,
            max_failures,
            float(window_seconds),
            float(lockout_seconds),
        )
        return until

    async def clear_pin_failures(self, extension: str) -> None:
        """Forget the extension's wrong PINs and end its lockout (a right PIN, an admin)."""
        await self._pool.execute(
            "DELETE FROM deactivation_lockouts WHERE extension = $1", extension
        )

    # -- administration: departments and extensions --------------------------------------

    async def add_department(
        self, name: str, interval_seconds: int | None = None, paging_group: str | None = None
    ) -> DepartmentInfo:
        name = _check_name(name, "department")
        _check_interval(interval_seconds)
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = (
                None if paging_group is None else await _paging_group_id(connection, paging_group)
            )
            try:
                await connection.execute(
                    """
                    INSERT INTO departments (name, interval_seconds, paging_group_id)
                    VALUES ($1, $2, $3)
                    """,
                    name,
                    interval_seconds,
                    group_id,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"department '{name}' already exists") from None
            return await _department_info(connection, name)

    async def remove_department(self, name: str) -> None:
        """Remove a department and its mappings; its alarms keep their department name."""
        status = await self._pool.execute(
            "DELETE FROM departments WHERE lower(name) = lower($1)", name.strip()
        )
        if status == "DELETE 0":
            raise StoreError(f"unknown department '{name.strip()}'")

    async def list_departments(self) -> list[DepartmentInfo]:
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(_DEPARTMENTS)
        return [_row(DepartmentInfo, row) for row in rows]

    async def get_department(self, name: str) -> DepartmentInfo:
        async with self._pool.acquire() as connection:
            return await _department_info(connection, name)

    async def set_department_interval(self, name: str, seconds: int | None) -> None:
        """The department's own interval, or None for the global default."""
        _check_interval(seconds)
        status = await self._pool.execute(
            "UPDATE departments SET interval_seconds = $2 WHERE lower(name) = lower($1)",
            name.strip(),
            seconds,
        )
        if status == "UPDATE 0":
            raise StoreError(f"unknown department '{name.strip()}'")

    async def set_department_paging_group(self, name: str, group: str | None) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = None if group is None else await _paging_group_id(connection, group)
            status = await connection.execute(
                "UPDATE departments SET paging_group_id = $2 WHERE lower(name) = lower($1)",
                name.strip(),
                group_id,
            )
            if status == "UPDATE 0":
                raise StoreError(f"unknown department '{name.strip()}'")

    async def map_extensions(self, department: str, pattern: str) -> ExtensionPattern:
        """Map an extension, range or pattern to a department; return it as stored."""
        parsed = _parse_pattern(pattern)
        async with self._pool.acquire() as connection, connection.transaction():
            department_id = await _department_id(connection, department)
            owner = await connection.fetchval(
                """
                SELECT d.name FROM department_extensions e
                JOIN departments d ON d.id = e.department_id
                WHERE e.pattern = $1
                """,
                parsed.text,
            )
            if owner is not None:
                raise StoreError(f"'{parsed.text}' is already mapped to department '{owner}'")
            try:
                await connection.execute(
                    "INSERT INTO department_extensions (department_id, pattern) VALUES ($1, $2)",
                    department_id,
                    parsed.text,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"'{parsed.text}' is already mapped") from None
        return parsed

    async def unmap_extensions(self, pattern: str) -> None:
        parsed = _parse_pattern(pattern)
        status = await self._pool.execute(
            "DELETE FROM department_extensions WHERE pattern = $1", parsed.text
        )
        if status == "DELETE 0":
            raise StoreError(f"'{parsed.text}' is not mapped to any department")

    # -- administration: paging groups ---------------------------------------------------

    async def add_paging_group(self, name: str) -> PagingGroup:
        name = _check_name(name, "paging group")
        try:
            group_id: int = await self._pool.fetchval(
                "INSERT INTO paging_groups (name) VALUES ($1) RETURNING id", name
            )
        except asyncpg.UniqueViolationError:
            raise StoreError(f"paging group '{name}' already exists") from None
        return PagingGroup(group_id, name, ())

    async def remove_paging_group(self, name: str) -> None:
        """Remove a group; its departments are left without one (they page nobody)."""
        status = await self._pool.execute(
            "DELETE FROM paging_groups WHERE lower(name) = lower($1)", name.strip()
        )
        if status == "DELETE 0":
            raise StoreError(f"unknown paging group '{name.strip()}'")

    async def add_paging_device(self, group: str, device: str) -> None:
        device = device.strip()
        if DEVICE.fullmatch(device) is None:
            raise StoreError(
                f"malformed device '{device}': expected TECHNOLOGY/RESOURCE, e.g. PJSIP/201"
            )
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = await _paging_group_id(connection, group)
            status = await connection.execute(
                """
                INSERT INTO paging_group_devices (group_id, device) VALUES ($1, $2)
                ON CONFLICT DO NOTHING
                """,
                group_id,
                device,
            )
            if status == "INSERT 0 0":
                raise StoreError(f"paging group '{group.strip()}' already has '{device}'")

    async def remove_paging_device(self, group: str, device: str) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = await _paging_group_id(connection, group)
            status = await connection.execute(
                "DELETE FROM paging_group_devices WHERE group_id = $1 AND device = $2",
                group_id,
                device.strip(),
            )
            if status == "DELETE 0":
                raise StoreError(f"paging group '{group.strip()}' has no '{device.strip()}'")

    async def list_paging_groups(self) -> list[PagingGroup]:
        rows = await self._pool.fetch(
            """
            SELECT g.id, g.name,
                   coalesce(array_agg(pd.device ORDER BY pd.device)
                            FILTER (WHERE pd.device IS NOT NULL), '{}') AS devices
            FROM paging_groups g
            LEFT JOIN paging_group_devices pd ON pd.group_id = g.id
            GROUP BY g.id
            ORDER BY lower(g.name)
            """
        )
        return [PagingGroup(row["id"], row["name"], tuple(row["devices"])) for row in rows]

    # -- administration: settings --------------------------------------------------------

    async def set_default_interval(self, seconds: int) -> None:
        _check_interval(seconds)
        await self._pool.execute(
            "UPDATE alarm_settings SET default_interval_seconds = $1, updated_at = now()",
            seconds,
        )

    async def set_policy(
        self,
        *,
        no_answer_policy: str | None = None,
        confirmation_attempts: int | None = None,
        pin_attempts: int | None = None,
        lockout_seconds: int | None = None,
    ) -> AlarmSettings:
        """Change the given settings, leave the others; return them all."""
        if no_answer_policy is not None and no_answer_policy not in NO_ANSWER_POLICIES:
            raise StoreError(
                f"no-answer policy must be one of {', '.join(NO_ANSWER_POLICIES)}, "
                f"not '{no_answer_policy}'"
            )
        for label, value in (
            ("confirmation attempts", confirmation_attempts),
            ("PIN attempts", pin_attempts),
        ):
            if value is not None and not MIN_ATTEMPTS <= value <= MAX_ATTEMPTS:
                raise StoreError(f"{label} must be between {MIN_ATTEMPTS} and {MAX_ATTEMPTS}")
        if lockout_seconds is not None and not 0 <= lockout_seconds <= MAX_LOCKOUT_SECONDS:
            raise StoreError(f"lockout must be between 0 and {MAX_LOCKOUT_SECONDS} seconds")
        row = await self._pool.fetchrow(
            """
            UPDATE alarm_settings SET
                no_answer_policy = coalesce($1, no_answer_policy),
                confirmation_attempts = coalesce($2, confirmation_attempts),
                pin_attempts = coalesce($3, pin_attempts),
                lockout_seconds = coalesce($4, lockout_seconds),
                updated_at = now()
            RETURNING *
            """,
            no_answer_policy,
            confirmation_attempts,
            pin_attempts,
            lockout_seconds,
        )
        assert row is not None, "002_alarms.sql inserts the one settings row"
        return _row(AlarmSettings, row)


# -- helpers ---------------------------------------------------------------------------

# Counts a cycle on the alarm row, idempotently: both only grow. $2: the cycle's number
# (NULL: one more than counted), $3: when its page started.
_COUNT_CYCLE = """
UPDATE alarms SET cycles = greatest(cycles, coalesce($2::int, cycles + 1)),
    last_cycle_at = greatest(last_cycle_at, $3::timestamptz)
WHERE id = $1
"""


def cycle_started_at(event: HistoryEvent) -> datetime:
    """When a ``page_cycle`` event's page started: its ``started_at`` detail (written
    since cycles are counted at their start), else when the event was made (its end)."""
    started = event.details.get("started_at")
    if isinstance(started, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(started)
            if parsed.tzinfo is not None:
                return parsed
    return event.occurred_at


_DEPARTMENTS = """
SELECT d.id, d.name, d.interval_seconds, g.name AS paging_group,
       coalesce(array_agg(e.pattern ORDER BY e.pattern)
                FILTER (WHERE e.pattern IS NOT NULL), '{}') AS patterns
FROM departments d
LEFT JOIN paging_groups g ON g.id = d.paging_group_id
LEFT JOIN department_extensions e ON e.department_id = d.id
GROUP BY d.id, g.name
ORDER BY lower(d.name)
"""
_DEPARTMENT_BY_NAME = """
SELECT d.id, d.name, d.interval_seconds, g.name AS paging_group,
       coalesce(array_agg(e.pattern ORDER BY e.pattern)
                FILTER (WHERE e.pattern IS NOT NULL), '{}') AS patterns
FROM departments d
LEFT JOIN paging_groups g ON g.id = d.paging_group_id
LEFT JOIN department_extensions e ON e.department_id = d.id
WHERE lower(d.name) = lower($1)
GROUP BY d.id, g.name
"""


async def _insert_event(connection: _Connection, event: HistoryEvent) -> bool:
    status = await connection.execute(
        """
        INSERT INTO alarm_events
            (event_id, occurred_at, alarm_id, kind, extension, department, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
        ON CONFLICT (event_id) DO NOTHING
        """,
        event.event_id,
        event.occurred_at,
        event.alarm_id,
        str(event.kind),
        event.extension,
        event.department,
        json.dumps(dict(event.details)),
    )
    return status == "INSERT 0 1"


def _for_alarm(event: HistoryEvent, alarm_id: int) -> HistoryEvent:
    return event.with_alarm(alarm_id) if event.alarm_id is None else event


async def _department_info(connection: _Connection, name: str) -> DepartmentInfo:
    row = await connection.fetchrow(_DEPARTMENT_BY_NAME, name.strip())
    if row is None:
        raise StoreError(f"unknown department '{name.strip()}'")
    return _row(DepartmentInfo, row)


async def _department_id(connection: _Connection, name: str) -> int:
    department_id: int | None = await connection.fetchval(
        "SELECT id FROM departments WHERE lower(name) = lower($1)", name.strip()
    )
    if department_id is None:
        raise StoreError(f"unknown department '{name.strip()}'")
    return department_id


async def _paging_group_id(connection: _Connection, name: str) -> int:
    group_id: int | None = await connection.fetchval(
        "SELECT id FROM paging_groups WHERE lower(name) = lower($1)", name.strip()
    )
    if group_id is None:
        raise StoreError(f"unknown paging group '{name.strip()}'")
    return group_id


def _check_name(name: str, what: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise StoreError(f"a {what} needs a name")
    return stripped


def _check_interval(seconds: int | None) -> None:
    if seconds is not None and not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise StoreError(
            f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, not {seconds}"
        )


def _check_extension(extension: str) -> None:
    if not is_extension(extension):
        raise StoreError(f"malformed extension '{extension}': expected 1 to 20 digits")


def _parse_pattern(pattern: str) -> ExtensionPattern:
    try:
        return ExtensionPattern.parse(pattern)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
