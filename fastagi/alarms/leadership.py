"""Leadership: which server pages an alarm, the gate before each page, and how a new
leader continues a dead one's schedule.

The leader and page locks are SQL (fastagi/store/leadership.py); this module turns them
into what a paging loop needs (a :class:`~fastagi.alarms.loop.Turn` per page, paging on
when PostgreSQL cannot say: an alarm is never silenced by a failure) and into the
resumption of a loop whose leader died: one interval after its last page *began*
(cycles are counted when they start, fastagi/alarms/loop.py), the page it died during
recorded with its outcome unknown, so the phones get no doubled page.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from fastagi.alarms.loop import Turn
from fastagi.alarms.outage import Outage
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store.leadership import LeaderLocks

logger = logging.getLogger(__name__)

# The error of a page whose leader died during it (recorded by the next leader).
INTERRUPTED_PAGE = "leader lost during the page; outcome unknown"


class Leadership:
    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        stores: Stores,
        recorder: HistoryRecorder,
        outage: Outage,
        *,
        namespace: int,
        instance_id: str,
        timeout: float,
    ) -> None:
        self.locks = LeaderLocks(pool, namespace)
        self._stores = stores
        self._recorder = recorder
        self._outage = outage
        self._instance_id = instance_id
        self._timeout = timeout

    @contextlib.asynccontextmanager
    async def gate(self, alarm_id: int) -> AsyncIterator[Turn]:
        """The turn of the next page of the alarm, holding its page lock until it is
        counted."""
        if alarm_id < 0 or self._outage.down:
            yield Turn(None)  # a provisional alarm, or PostgreSQL down: page
            return
        async with self.locks.page_turn(alarm_id, self._timeout) as row:
            if row is None:
                yield Turn(None)
            elif not row.active:
                yield Turn(False)
            else:
                yield Turn(True, row.cycles, row.count)

    async def resume(self, alarm: Alarm) -> float:
        """Take over a led-before alarm: record the page its last leader died during, if
        any, and the ``resumed`` event; return the delay until its next page."""
        await self._record_interrupted_page(alarm)
        first_delay = await self._resume_delay(alarm)
        await self._recorder.record(
            HistoryEvent(
                EventKind.RESUMED,
                alarm.id,
                alarm.extension,
                alarm.department_name,
                {"instance": self._instance_id, "first_page_in": round(first_delay, 3)},
            )
        )
        return first_delay

    async def _record_interrupted_page(self, alarm: Alarm) -> None:
        """The previous leader counted a cycle (at its start) whose event it never wrote:
        it died during that page. Record the page, its outcome unknown, so the history has
        every page the phones received, each once.

        Only the last counted cycle is looked at: a dead leader's earlier events, if any,
        wait in its own journal and arrive when it runs again.
        """
        recorded = await self._stores.history.last_recorded_cycle(alarm.id)
        if alarm.cycles <= recorded:
            return
        logger.warning(
            "alarm %s: cycle %s was paged by a leader that died during it; outcome unknown",
            alarm.id,
            alarm.cycles,
        )
        details: dict[str, object] = {
            "cycle": alarm.cycles,
            "dialled": None,
            "answered": None,
            "duration": None,
            "error": INTERRUPTED_PAGE,
            "channel_id": None,
            "cancelled": False,
            "instance": self._instance_id,
        }
        if alarm.last_cycle_at is not None:
            details["started_at"] = alarm.last_cycle_at.isoformat()
        await self._recorder.record(
            HistoryEvent(
                EventKind.PAGE_CYCLE, alarm.id, alarm.extension, alarm.department_name, details
            )
        )

    async def _resume_delay(self, alarm: Alarm) -> float:
        """Continue the previous leader's schedule: one interval after its last page
        began (``last_cycle_at``: cycles are counted when they start), start to start."""
        if alarm.last_cycle_at is None:
            return 0.0
        interval = await self._stores.directory.interval_seconds(alarm)
        since = (datetime.now(UTC) - alarm.last_cycle_at).total_seconds()
        return max(0.0, interval - since)
