"""The emergency call's table (sql/004_acknowledgements.sql): every query of it lives here.

Theory of operation: an acknowledgement is one row of ``alarm_acknowledgements`` per
alarm, inserted by whichever server's ``acknowledge`` flow took the responder's key press
(``ON CONFLICT DO NOTHING``: the first press wins), together with its ``acknowledged``
history event in the same transaction. The server that places the emergency calls reads
the row (:meth:`EmergencyStore.alarm_summary`) to learn that it may stop calling, so an
acknowledgement taken by another server behind ``hagi://`` is seen as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.domain.events import HistoryEvent
from fastagi.store._common import row_to

ACTIVE = "active"


@dataclass(frozen=True)
class Acknowledgement:
    alarm_id: int
    acknowledged_at: datetime
    acknowledged_by: str
    attempt: str | None
    channel: str | None


@dataclass(frozen=True)
class AlarmSummary:
    """What an emergency call says about an alarm, and whether it still needs calls."""

    id: int
    department_name: str
    extension: str
    state: str
    activated_at: datetime
    acknowledgement: Acknowledgement | None
    drill: bool = False  # a drill (sql/007_drills.sql): the call says it is a test

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE


@dataclass(frozen=True)
class AcknowledgeResult:
    acknowledgement: Acknowledgement
    first: bool  # False: somebody had acknowledged already (their row is returned)


_SUMMARY = """
SELECT a.id, a.department_name, a.extension, a.state, a.activated_at, a.drill,
       k.acknowledged_at, k.acknowledged_by, k.attempt, k.channel
FROM alarms a
LEFT JOIN alarm_acknowledgements k ON k.alarm_id = a.id
WHERE a.id = $1
"""
_ACKNOWLEDGE = """
INSERT INTO alarm_acknowledgements (alarm_id, acknowledged_by, attempt, channel)
VALUES ($1, $2, $3, $4)
ON CONFLICT (alarm_id) DO NOTHING
RETURNING alarm_id, acknowledged_at, acknowledged_by, attempt, channel
"""
_EXISTING = """
SELECT alarm_id, acknowledged_at, acknowledged_by, attempt, channel
FROM alarm_acknowledgements WHERE alarm_id = $1
"""
# The same insert as fastagi.store.alarms (idempotent by event_id).
_INSERT_EVENT = """
INSERT INTO alarm_events (event_id, occurred_at, alarm_id, kind, extension, department, details)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""


def _acknowledgement(row: asyncpg.Record) -> Acknowledgement:
    return row_to(Acknowledgement, row)


class EmergencyStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def alarm_summary(self, alarm_id: int) -> AlarmSummary | None:
        """The alarm and its acknowledgement, or None for an unknown alarm."""
        row = await self._pool.fetchrow(_SUMMARY, alarm_id)
        if row is None:
            return None
        acknowledgement = None
        if row["acknowledged_at"] is not None:
            acknowledgement = row_to(Acknowledgement, row, alarm_id=row["id"])
        return row_to(AlarmSummary, row, acknowledgement=acknowledgement)

    async def acknowledge(
        self,
        alarm_id: int,
        *,
        by: str,
        attempt: str | None,
        channel: str | None,
        event: HistoryEvent,
    ) -> AcknowledgeResult | None:
        """Record the alarm's acknowledgement and ``event`` (its ``acknowledged`` history
        event), unless the alarm was acknowledged already: then nothing is written and the
        earlier acknowledgement is returned. None for an unknown alarm."""
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                row = await connection.fetchrow(_ACKNOWLEDGE, alarm_id, by, attempt, channel)
                if row is None:
                    existing = await connection.fetchrow(_EXISTING, alarm_id)
                    assert existing is not None, "ON CONFLICT without a row"
                    return AcknowledgeResult(_acknowledgement(existing), first=False)
                await connection.execute(
                    _INSERT_EVENT,
                    event.event_id,
                    event.occurred_at,
                    alarm_id,
                    str(event.kind),
                    event.extension,
                    event.department,
                    event.details_json,
                )
        except asyncpg.ForeignKeyViolationError:
            return None  # no such alarm; the transaction was rolled back
        return AcknowledgeResult(_acknowledgement(row), first=True)
