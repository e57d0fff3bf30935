"""What the web console's live board shows, read from PostgreSQL in one query, so every
server's board is right whichever server leads the alarm: each active alarm with its
trigger, its cycles, the last page's outcome, the emergency call and the lamps.

Nothing here is kept in memory: the board is recomputed when ``NOTIFY fastagi_board``
says something changed (sql/005_web.sql).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from fastagi.store._common import row_to

BOARD_CHANNEL = "fastagi_board"

# Kinds that say what the emergency call is doing, newest wins.
_EMERGENCY_KINDS = ["emergency_dialling", "emergency_call", "escalated", "emergency_exhausted"]

_BOARD = """
SELECT a.id, a.department_id, a.department_name, a.extension, a.activated_at, a.cycles,
       a.last_cycle_at,
       coalesce(d.interval_seconds, s.default_interval_seconds) AS interval_seconds,
       cyc.details AS last_cycle,
       trig.kind AS trigger_kind, trig.details AS trigger_details,
       conf.kind AS answer_kind,
       em.kind AS emergency_kind, em.details AS emergency_details,
       em.occurred_at AS emergency_at,
       k.acknowledged_at, k.acknowledged_by,
       clock_timestamp() AS now
FROM alarms a
CROSS JOIN alarm_settings s
LEFT JOIN departments d ON d.id = a.department_id
LEFT JOIN alarm_acknowledgements k ON k.alarm_id = a.id
LEFT JOIN LATERAL (
    SELECT details FROM alarm_events
    WHERE alarm_id = a.id AND kind = 'page_cycle'
    ORDER BY occurred_at DESC, id DESC LIMIT 1
) cyc ON true
LEFT JOIN LATERAL (
    SELECT kind, details FROM alarm_events
    WHERE alarm_id = a.id AND kind IN ('activated', 'triggered_fallback')
    ORDER BY occurred_at, id LIMIT 1
) act ON true
LEFT JOIN LATERAL (
    SELECT kind, details FROM alarm_events
    WHERE details ->> 'uniqueid' = act.details ->> 'uniqueid'
      AND kind IN ('triggered', 'triggered_fallback')
    ORDER BY occurred_at, id LIMIT 1
) trig ON true
LEFT JOIN LATERAL (
    SELECT kind FROM alarm_events
    WHERE details ->> 'uniqueid' = act.details ->> 'uniqueid'
      AND kind IN ('confirmed', 'no_answer')
    ORDER BY occurred_at, id LIMIT 1
) conf ON true
LEFT JOIN LATERAL (
    SELECT kind, details, occurred_at FROM alarm_events
    WHERE alarm_id = a.id AND kind = ANY($1::text[])
    ORDER BY occurred_at DESC, id DESC LIMIT 1
) em ON true
WHERE a.state = 'active'
ORDER BY a.activated_at, a.id
"""

_LAMPS = """
SELECT DISTINCT ON (details ->> 'device') details ->> 'device' AS device,
       details ->> 'state' AS state, occurred_at
FROM alarm_events
WHERE kind = 'lamp_changed' AND details ->> 'device' = ANY($1::text[])
ORDER BY details ->> 'device', occurred_at DESC, id DESC
"""


@dataclass(frozen=True)
class LastCycle:
    cycle: int
    dialled: int
    answered: int
    interval: int  # the interval the loop read after this page: the wait before the next
    started_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class EmergencyState:
    kind: str  # emergency_dialling, emergency_call, escalated, emergency_exhausted
    destination: str | None
    outcome: str | None
    at: datetime


@dataclass(frozen=True)
class BoardAlarm:
    id: int
    department_id: int | None
    department_name: str
    extension: str
    activated_at: datetime
    cycles: int  # counted when each page starts
    last_cycle_at: datetime | None
    interval_seconds: int  # as configured now (applies from the next cycle)
    last_cycle: LastCycle | None  # the last page that ended
    trigger_channel: str | None
    trigger: str  # how it was raised: "confirmed", "no answer", "dialplan fallback", ...
    emergency: EmergencyState | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    lamps: dict[str, str]  # device -> its last recorded state

    @property
    def paging_now(self) -> bool:
        """A page was counted at its start and has not ended (no event yet)."""
        ended = self.last_cycle.cycle if self.last_cycle else 0
        return self.cycles > ended

    @property
    def next_page_at(self) -> datetime | None:
        """When the next page is due, from the last page's start and the interval the
        loop read after it; None when a page is under way or none has ended yet."""
        if self.paging_now or self.last_cycle is None or self.last_cycle_at is None:
            return None
        return self.last_cycle_at + timedelta(seconds=self.last_cycle.interval)


@dataclass(frozen=True)
class Board:
    alarms: list[BoardAlarm]
    now: datetime  # the database's clock when read


def _json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(json.loads(value) if isinstance(value, str) else value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _last_cycle(details: dict[str, Any]) -> LastCycle | None:
    if not details or not isinstance(details.get("cycle"), int):
        return None
    started = details.get("started_at")
    try:
        started_at = datetime.fromisoformat(started) if isinstance(started, str) else None
    except ValueError:
        started_at = None
    return LastCycle(
        cycle=details["cycle"],
        dialled=_int(details.get("dialled")),
        answered=_int(details.get("answered")),
        interval=_int(details.get("interval")) or 60,
        started_at=started_at,
        error=details.get("error") if isinstance(details.get("error"), str) else None,
    )


def _trigger(row: asyncpg.Record) -> str:
    if row["trigger_kind"] == "triggered_fallback":
        return "dialplan fallback (no server answered)"
    if row["answer_kind"] == "no_answer":
        return "no answer to the question (policy: activate)"
    if row["answer_kind"] == "confirmed":
        return "confirmed by the caller"
    return "panic call"


class BoardStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def board(self, *, lamp_device: str, department_lamp_prefix: str) -> Board:
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await connection.fetch(_BOARD, _EMERGENCY_KINDS)
            devices = [lamp_device] + [
                f"{department_lamp_prefix}{row['department_id']}"
                for row in rows
                if row["department_id"] is not None
            ]
            lamps = {row["device"]: row["state"] for row in await connection.fetch(_LAMPS, devices)}
            now = await connection.fetchval("SELECT clock_timestamp()")
        alarms = []
        for row in rows:
            mine = [lamp_device]
            if row["department_id"] is not None:
                mine.append(f"{department_lamp_prefix}{row['department_id']}")
            trigger = _json(row["trigger_details"])
            emergency = _json(row["emergency_details"])
            alarms.append(
                row_to(
                    BoardAlarm,
                    row,
                    last_cycle=_last_cycle(_json(row["last_cycle"])),
                    trigger_channel=trigger.get("channel") if trigger else None,
                    trigger=_trigger(row),
                    emergency=None
                    if row["emergency_kind"] is None
                    else EmergencyState(
                        kind=row["emergency_kind"],
                        destination=emergency.get("destination"),
                        outcome=emergency.get("outcome"),
                        at=row["emergency_at"],
                    ),
                    lamps={device: lamps.get(device, "unknown") for device in mine},
                )
            )
        return Board(alarms, now)
