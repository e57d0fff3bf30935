"""The directory and policy at the time of an alarm (``alarm_snapshots``, sql/011),
for replaying it (fastagi/admin/replay.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg


class SnapshotStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def take(
        self,
        alarm_id: int,
        department_id: int | None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep the alarm's department and the policy as they are now, and the server's
        ``settings`` that shape it (sql/012), once per alarm."""
        await self._pool.execute(
            """INSERT INTO alarm_snapshots (alarm_id, snapshot, settings)
               VALUES ($1, directory_snapshot($2), $3::jsonb)
               ON CONFLICT (alarm_id) DO NOTHING""",
            alarm_id,
            department_id,
            None if settings is None else json.dumps(settings),
        )

    async def settings_of_alarm(self, alarm_id: int) -> dict[str, Any] | None:
        """The settings kept with the alarm's snapshot (None: none kept)."""
        text = await self._pool.fetchval(
            "SELECT settings::text FROM alarm_snapshots WHERE alarm_id = $1", alarm_id
        )
        return None if text is None else dict(json.loads(text))

    async def of_alarm(self, alarm_id: int) -> dict[str, Any] | None:
        text = await self._pool.fetchval(
            "SELECT snapshot::text FROM alarm_snapshots WHERE alarm_id = $1", alarm_id
        )
        return None if text is None else dict(json.loads(text))

    async def current(self, department: str) -> dict[str, Any]:
        """The snapshot the department would have now (by name)."""
        text = await self._pool.fetchval(
            """SELECT directory_snapshot(
                   (SELECT id FROM departments WHERE lower(name) = lower(btrim($1))))::text""",
            department,
        )
        return dict(json.loads(text))
