"""The site's health, shared by every server (sql/008_health.sql).

Each server reports what its scheduled checks see (:meth:`SiteHealthStore.report`); the
site is degraded while any report younger than ``stale_after`` says so. The transition
and its history event are written in one transaction under the state row's lock: of two
servers that see the same fault, the first changes the state and records the event, the
second finds nothing to change. So each transition is told once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from fastagi.domain.events import HistoryEvent
from fastagi.store.history import insert_event


@dataclass(frozen=True)
class Failing:
    """One check that fails, as a server reported it."""

    instance_id: str
    name: str
    message: str


@dataclass(frozen=True)
class SiteHealth:
    degraded: bool
    # True when this report changed the site's state (and recorded ``event``).
    changed: bool
    failing: tuple[Failing, ...]


# Builds the transition's event from the new state and what fails (empty on recovery).
EventFor = Callable[[bool, Sequence[Failing]], HistoryEvent]


class SiteHealthStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def report(
        self,
        instance_id: str,
        *,
        degraded: bool,
        failing: Sequence[tuple[str, str]],
        stale_after: float,
        event_for: EventFor,
    ) -> SiteHealth:
        """Record this server's view (``failing``: (check, message) pairs) and return the
        site's; when the site's state changes, write it and ``event_for``'s event in the
        same transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            was: bool = await connection.fetchval(
                "SELECT degraded FROM health_state WHERE only_row FOR UPDATE"
            )
            await connection.execute(
                """
                INSERT INTO health_reports (instance_id, degraded, failing, reported_at)
                VALUES ($1, $2, $3::jsonb, now())
                ON CONFLICT (instance_id) DO UPDATE
                    SET degraded = $2, failing = $3::jsonb, reported_at = now()
                """,
                instance_id,
                degraded,
                json.dumps([{"name": name, "message": message} for name, message in failing]),
            )
            rows = await connection.fetch(
                """
                SELECT instance_id, failing FROM health_reports
                WHERE degraded AND reported_at > now() - make_interval(secs => $1)
                ORDER BY instance_id
                """,
                stale_after,
            )
            found = tuple(
                Failing(row["instance_id"], item["name"], item["message"])
                for row in rows
                for item in _items(row["failing"])
            )
            now_degraded = bool(rows)
            if now_degraded == was:
                return SiteHealth(now_degraded, False, found)
            await connection.execute(
                "UPDATE health_state SET degraded = $1, changed_at = now() WHERE only_row",
                now_degraded,
            )
            await insert_event(connection, event_for(now_degraded, found))
            return SiteHealth(now_degraded, True, found)

    async def withdraw(self, instance_id: str) -> None:
        """This server stops: its report no longer counts (the next report of another
        server may then clear the site)."""
        await self._pool.execute("DELETE FROM health_reports WHERE instance_id = $1", instance_id)

    async def degraded(self) -> bool:
        """The site's state as last written."""
        value: bool = await self._pool.fetchval("SELECT degraded FROM health_state")
        return value


def _items(raw: Any) -> list[dict[str, str]]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [item for item in items if isinstance(item, dict)]
