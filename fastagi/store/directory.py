"""The directory (``departments``, ``department_extensions``, ``paging_groups``,
``paging_group_devices``): who is in which department, and which devices page it.

Read as one snapshot (:meth:`DirectoryStore.load_directory`) by the servers, and per alarm
(interval, devices) right before each page, because administrators change it while
alarms run.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import Department, Directory, ExtensionPattern
from fastagi.store._common import (
    Connection,
    StoreError,
    check_confirmation_mode,
    check_interval,
    check_language,
    check_name,
    parse_pattern,
    row_to,
)

DEVICE = re.compile(r"[A-Za-z0-9_]+/[A-Za-z0-9_.@:+-]+")
# What DirectoryStore.update_department (and fastagi/admin's set_department) leave as is.
UNCHANGED: Any = object()
_ALL_DEVICES = "SELECT DISTINCT device FROM paging_group_devices ORDER BY device"


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
    confirmation_mode: str | None = None  # None: the site's default
    language: str | None = None  # None: the site's default


class DirectoryStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def load_directory(self) -> Directory:
        """Departments, their paging devices and extension mappings, as one snapshot."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            site = await connection.fetchrow(
                "SELECT default_interval_seconds, default_language FROM alarm_settings"
            )
            assert site is not None, "002_alarms.sql inserts the one settings row"
            departments = await connection.fetch(
                """
                SELECT d.id, d.name, d.paging_group_id, d.interval_seconds,
                       d.confirmation_mode, d.language, g.name AS paging_group,
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
            all_devices = await connection.fetch(_ALL_DEVICES)
        # The build indexes the extensions of every narrow mapping (up to 100,000: 20-100 ms,
        # docs/performance.md); in a worker thread the event loop gets the GIL back every
        # switch interval (5 ms) and goes on answering Asterisk, instead of stalling for
        # the whole build.
        return await asyncio.to_thread(
            Directory.build,
            departments=[
                Department(
                    id=row["id"],
                    name=row["name"],
                    paging_group_id=row["paging_group_id"],
                    interval_seconds=row["interval_seconds"],
                    devices=tuple(row["devices"]),
                    paging_group=row["paging_group"],
                    confirmation_mode=row["confirmation_mode"],
                    language=row["language"],
                )
                for row in departments
            ],
            mappings=[(row["department_id"], row["pattern"]) for row in mappings],
            default_interval_seconds=site["default_interval_seconds"],
            all_devices=[row["device"] for row in all_devices],
            default_language=site["default_language"],
        )

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
        """The devices of the alarm's department's paging group now (may be empty); for
        an alarm of no department, every paging group's."""
        if alarm.department_id is None:
            rows = await self._pool.fetch(_ALL_DEVICES)
            return tuple(row["device"] for row in rows)
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

    async def add_department(
        self, name: str, interval_seconds: int | None = None, paging_group: str | None = None
    ) -> DepartmentInfo:
        name = check_name(name, "department")
        check_interval(interval_seconds)
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = (
                None
                if paging_group is None
                else await _paging_group_id(connection, paging_group, "paging_group")
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
                raise StoreError(f"department '{name}' already exists", field="name") from None
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
        return [row_to(DepartmentInfo, row) for row in rows]

    async def get_department(self, name: str) -> DepartmentInfo:
        async with self._pool.acquire() as connection:
            return await _department_info(connection, name)

    async def set_department_interval(self, name: str, seconds: int | None) -> None:
        """The department's own interval, or None for the global default."""
        check_interval(seconds)
        status = await self._pool.execute(
            "UPDATE departments SET interval_seconds = $2 WHERE lower(name) = lower($1)",
            name.strip(),
            seconds,
        )
        if status == "UPDATE 0":
            raise StoreError(f"unknown department '{name.strip()}'")

    async def set_department_paging_group(self, name: str, group: str | None) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = (
                None if group is None else await _paging_group_id(connection, group, "paging_group")
            )
            status = await connection.execute(
                "UPDATE departments SET paging_group_id = $2 WHERE lower(name) = lower($1)",
                name.strip(),
                group_id,
            )
            if status == "UPDATE 0":
                raise StoreError(f"unknown department '{name.strip()}'")

    async def update_department(
        self,
        name: str,
        *,
        new_name: str = UNCHANGED,
        interval_seconds: int | None = UNCHANGED,
        paging_group: str | None = UNCHANGED,
        confirmation_mode: str | None = UNCHANGED,
        language: str | None = UNCHANGED,
    ) -> DepartmentInfo:
        """Rename a department, change its interval (None: the global default), its
        paging group (None: none), its confirmation mode or language (None: the site's
        default), all in one transaction: a refused change changes nothing. What is not
        given stays. Returns the department as it is now."""
        values: list[Any] = [name.strip()]
        assignments: list[str] = []
        if new_name is not UNCHANGED:
            new_name = check_name(new_name, "department", "new_name")
            values.append(new_name)
            assignments.append(f"name = ${len(values)}")
        if interval_seconds is not UNCHANGED:
            check_interval(interval_seconds)
            values.append(interval_seconds)
            assignments.append(f"interval_seconds = ${len(values)}")
        if confirmation_mode is not UNCHANGED:
            check_confirmation_mode(confirmation_mode)
            values.append(confirmation_mode)
            assignments.append(f"confirmation_mode = ${len(values)}")
        if language is not UNCHANGED:
            check_language(language)
            values.append(language)
            assignments.append(f"language = ${len(values)}")
        async with self._pool.acquire() as connection, connection.transaction():
            if paging_group is not UNCHANGED:
                values.append(
                    None
                    if paging_group is None
                    else await _paging_group_id(connection, paging_group, "paging_group")
                )
                assignments.append(f"paging_group_id = ${len(values)}")
            if not assignments:
                raise StoreError(
                    "nothing to change: give a name, an interval, a paging group,"
                    " a confirmation mode or a language"
                )
            try:
                # The assignments are fixed texts of this function; values are parameters.
                status = await connection.execute(
                    f"UPDATE departments SET {', '.join(assignments)}"  # noqa: S608
                    " WHERE lower(name) = lower($1)",
                    *values,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(
                    f"department '{new_name}' already exists", field="new_name"
                ) from None
            if status == "UPDATE 0":
                raise StoreError(f"unknown department '{name.strip()}'", field="name")
            return await _department_info(connection, name if new_name is UNCHANGED else new_name)

    async def map_extensions(self, department: str, pattern: str) -> ExtensionPattern:
        """Map an extension, range or pattern to a department; return it as stored."""
        parsed = parse_pattern(pattern)
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
                raise StoreError(
                    f"'{parsed.text}' is already mapped to department '{owner}'", field="pattern"
                )
            try:
                await connection.execute(
                    "INSERT INTO department_extensions (department_id, pattern) VALUES ($1, $2)",
                    department_id,
                    parsed.text,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"'{parsed.text}' is already mapped", field="pattern") from None
        return parsed

    async def unmap_extensions(self, pattern: str) -> None:
        parsed = parse_pattern(pattern)
        status = await self._pool.execute(
            "DELETE FROM department_extensions WHERE pattern = $1", parsed.text
        )
        if status == "DELETE 0":
            raise StoreError(f"'{parsed.text}' is not mapped to any department", field="pattern")

    async def add_paging_group(self, name: str) -> PagingGroup:
        name = check_name(name, "paging group")
        try:
            group_id: int = await self._pool.fetchval(
                "INSERT INTO paging_groups (name) VALUES ($1) RETURNING id", name
            )
        except asyncpg.UniqueViolationError:
            raise StoreError(f"paging group '{name}' already exists", field="name") from None
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
                f"malformed device '{device}': expected TECHNOLOGY/RESOURCE, e.g. PJSIP/201",
                field="device",
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
                raise StoreError(
                    f"paging group '{group.strip()}' already has '{device}'", field="device"
                )

    async def remove_paging_device(self, group: str, device: str) -> None:
        if DEVICE.fullmatch(device.strip()) is None:  # none was ever added (nor a NUL sent)
            raise StoreError(
                f"paging group '{group.strip()}' has no '{device.strip()}'", field="device"
            )
        async with self._pool.acquire() as connection, connection.transaction():
            group_id = await _paging_group_id(connection, group)
            status = await connection.execute(
                "DELETE FROM paging_group_devices WHERE group_id = $1 AND device = $2",
                group_id,
                device.strip(),
            )
            if status == "DELETE 0":
                raise StoreError(
                    f"paging group '{group.strip()}' has no '{device.strip()}'", field="device"
                )

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


# A DepartmentInfo row: the department, its paging group's name and its patterns.
_DEPARTMENT_INFO = """
SELECT d.id, d.name, d.interval_seconds, d.confirmation_mode, d.language,
       g.name AS paging_group,
       coalesce(array_agg(e.pattern ORDER BY e.pattern)
                FILTER (WHERE e.pattern IS NOT NULL), '{}') AS patterns
FROM departments d
LEFT JOIN paging_groups g ON g.id = d.paging_group_id
LEFT JOIN department_extensions e ON e.department_id = d.id
"""
_DEPARTMENTS = _DEPARTMENT_INFO + "GROUP BY d.id, g.name\nORDER BY lower(d.name)\n"
_DEPARTMENT_BY_NAME = _DEPARTMENT_INFO + "WHERE lower(d.name) = lower($1)\nGROUP BY d.id, g.name\n"


async def _department_info(connection: Connection, name: str) -> DepartmentInfo:
    row = await connection.fetchrow(_DEPARTMENT_BY_NAME, name.strip())
    if row is None:
        raise StoreError(f"unknown department '{name.strip()}'")
    return row_to(DepartmentInfo, row)


async def _department_id(connection: Connection, name: str) -> int:
    department_id: int | None = await connection.fetchval(
        "SELECT id FROM departments WHERE lower(name) = lower($1)", name.strip()
    )
    if department_id is None:
        raise StoreError(f"unknown department '{name.strip()}'", field="department")
    return department_id


async def _paging_group_id(connection: Connection, name: str, field: str = "group") -> int:
    """The group's id; ``field``: the admin function's argument that named it."""
    group_id: int | None = await connection.fetchval(
        "SELECT id FROM paging_groups WHERE lower(name) = lower($1)", name.strip()
    )
    if group_id is None:
        raise StoreError(f"unknown paging group '{name.strip()}'", field=field)
    return group_id
