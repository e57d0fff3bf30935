"""The connectivity probe's table: one row per probe call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class ProbeCall:
    id: int
    uniqueid: str
    channel: str | None
    callerid: str | None
    calleridname: str | None
    digits: str
    route: str | None
    created_at: datetime


class ProbeStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def record(  # noqa: PLR0917 - the flows' ProbeRecorder protocol is positional
        self,
        uniqueid: str,
        channel: str | None,
        callerid: str | None,
        calleridname: str | None,
        digits: str,
        route: str | None,
    ) -> int:
        """Store one probe call; return its id."""
        probe_id: int = await self._pool.fetchval(
            """
            INSERT INTO probe_calls
                (uniqueid, channel, callerid, calleridname, digits, route)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING id
            """,
            uniqueid,
            channel,
            callerid,
            calleridname,
            digits,
            route,
        )
        return probe_id

    async def find(self, uniqueid: str) -> ProbeCall | None:
        """The probe call of the channel ``uniqueid`` (the ;2 half of a Local channel
        whose uniqueid the caller chose), or None when the server recorded none."""
        row = await self._pool.fetchrow(
            """
            SELECT id, uniqueid, channel, callerid, calleridname, digits, route, created_at
            FROM probe_calls
            WHERE uniqueid = $1
            ORDER BY id DESC
            LIMIT 1
            """,
            uniqueid,
        )
        return None if row is None else ProbeCall(**dict(row.items()))

    async def list_recent(self, limit: int = 20) -> list[ProbeCall]:
        """The latest ``limit`` probe calls, newest first."""
        rows = await self._pool.fetch(
            """
            SELECT id, uniqueid, channel, callerid, calleridname, digits, route,
                   created_at
            FROM probe_calls
            ORDER BY created_at DESC, id DESC
            LIMIT $1
            """,
            limit,
        )
        return [ProbeCall(**dict(row.items())) for row in rows]
