"""Recorded locations (``recorded_locations``, sql/010_recordings.sql): which file is the
current recording of an extension or a department. The files themselves are handled by
fastagi/admin/recordings.py; this module only says which one is current."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.store._common import StoreError


@dataclass(frozen=True)
class RecordedLocation:
    id: int
    extension: str | None  # exactly one of extension and department is set
    department: str | None
    file_name: str
    seconds: float
    recorded_by: str
    recorded_at: datetime

    @property
    def owner(self) -> str:
        """'extension 101' or 'department Emergency Room'."""
        if self.extension is not None:
            return f"extension {self.extension}"
        return f"department {self.department}"


def _location(row: asyncpg.Record) -> RecordedLocation:
    return RecordedLocation(
        id=row["id"],
        extension=row["extension"],
        department=row["department"],
        file_name=row["file_name"],
        seconds=float(row["seconds"]),
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


class RecordingStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def list(self) -> list[RecordedLocation]:
        rows = await self._pool.fetch(
            "SELECT * FROM recorded_location_list ORDER BY extension NULLS LAST, department"
        )
        return [_location(row) for row in rows]

    async def for_extension(self, extension: str) -> RecordedLocation | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM recorded_location_list WHERE extension = $1", extension
        )
        return _location(row) if row else None

    async def for_department(self, name: str) -> RecordedLocation | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM recorded_location_list WHERE lower(department) = lower($1)",
            name.strip(),
        )
        return _location(row) if row else None

    async def for_page(self, extension: str, department_id: int | None) -> RecordedLocation | None:
        """What an alarm of ``extension`` in ``department_id`` pages: the extension's own
        recording, else its department's."""
        row = await self._pool.fetchrow(
            """SELECT * FROM recorded_location_list
                WHERE extension = $1 OR department_id = $2
                ORDER BY extension IS NULL LIMIT 1""",
            extension,
            department_id,
        )
        return _location(row) if row else None

    async def replace(
        self,
        *,
        extension: str | None = None,
        department: str | None = None,
        file_name: str,
        seconds: float,
        recorded_by: str,
    ) -> tuple[RecordedLocation, str | None]:
        """Make ``file_name`` the current recording of ``extension`` or ``department``;
        the new row and the file name it replaced (to remove), in one statement."""
        if (extension is None) == (department is None):
            raise StoreError("give an extension or a department")
        async with self._pool.acquire() as connection, connection.transaction():
            department_id = None
            if department is not None:
                department_id = await connection.fetchval(
                    "SELECT id FROM departments WHERE lower(name) = lower($1)",
                    department.strip(),
                )
                if department_id is None:
                    raise StoreError(f"no department {department.strip()!r}", field="department")
            # The old row goes and the new one comes in one transaction: a reader sees
            # one of them (the unique columns forbid two).
            old = await connection.fetchval(
                """DELETE FROM recorded_locations
                   WHERE extension = $1 OR department_id = $2 RETURNING file_name""",
                extension,
                department_id,
            )
            await connection.execute(
                """INSERT INTO recorded_locations
                       (extension, department_id, file_name, seconds, recorded_by)
                   VALUES ($1, $2, $3, $4, $5)""",
                extension,
                department_id,
                file_name,
                seconds,
                recorded_by,
            )
            row = await connection.fetchrow(
                "SELECT * FROM recorded_location_list WHERE file_name = $1", file_name
            )
        assert row is not None  # written in this transaction
        return _location(row), old

    async def delete(
        self, *, extension: str | None = None, department: str | None = None
    ) -> RecordedLocation | None:
        """Remove the recording of ``extension`` or ``department``; the removed row (its
        file is the caller's to delete), None when there was none."""
        if (extension is None) == (department is None):
            raise StoreError("give an extension or a department")
        row = await self._pool.fetchrow(
            """WITH gone AS (
                   DELETE FROM recorded_locations WHERE id IN (
                       SELECT id FROM recorded_location_list
                       WHERE extension = $1 OR lower(department) = lower(btrim($2)))
                   RETURNING *)
               SELECT g.*, d.name AS department FROM gone g
                   LEFT JOIN departments d ON d.id = g.department_id""",
            extension,
            department,
        )
        return _location(row) if row else None
