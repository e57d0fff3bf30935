"""The drill schedule: ``fastagi serve`` starts the drills ``[drill] schedule`` asks for.

Theory of operation. Every server of a site runs the same schedule; at each slot
(fastagi/domain/drill.py ``next_slot``: daily, weekly or monthly at a local time) each
one asks the alarm service to start a drill of every scheduled department, naming the
slot. The slot is the claim: the drill's row carries it under a unique index
(sql/007_drills.sql), so the first server's insert makes the drill and every other
server's does nothing, whenever it comes (a clock a minute late included). The server
that made it leads it, as a drill from a phone. A slot whose drill cannot start (a real
alarm of the department is active, or a drill of it runs) leaves one ``drill_refused``
event, under an id derived from the slot: written once, whichever servers try.

A slot that passed while no server ran is not caught up: a drill belongs to its quiet
hour. The wait re-reads the clock at least once a minute, so a clock set forward or back
(NTP, a daylight-saving change) moves the drill with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from fastagi.alarms.recorder import HistoryRecorder
from fastagi.alarms.service import AlarmService
from fastagi.config import DrillSettings
from fastagi.domain.directory import Department, Directory
from fastagi.domain.drill import SCHEDULE, next_slot, slot_event_id
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.alarms import DrillStartOutcome

logger = logging.getLogger(__name__)

# The longest single sleep before the clock is read again.
_RECHECK_SECONDS = 60.0

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


class DrillScheduler:
    def __init__(
        self,
        service: AlarmService,
        settings: DrillSettings,
        *,
        recorder: HistoryRecorder,
        instance_id: str,
        clock: Clock = _now,
    ) -> None:
        self._service = service
        self._settings = settings
        self._recorder = recorder
        self._instance_id = instance_id
        self._clock = clock
        self._rule = settings.schedule_rule()
        self.slots_run = 0  # slots this server has handled (for tests and logs)

    @property
    def enabled(self) -> bool:
        return self._settings.schedule != "off"

    async def run(self) -> None:
        """Run slot after slot until cancelled (nothing when the schedule is off)."""
        slot = next_slot(self._rule, self._clock())
        if slot is None:
            return
        logger.info("next scheduled drill: %s", slot.isoformat())
        while True:
            await self._sleep_until(slot)
            try:
                await self.run_slot(slot)
            except Exception:
                logger.exception("scheduled drill of %s failed", slot.isoformat())
            self.slots_run += 1
            following = next_slot(self._rule, max(self._clock(), slot))
            if following is None:  # pragma: no cover - the rule does not change
                return
            slot = following
            logger.info("next scheduled drill: %s", slot.isoformat())

    async def _sleep_until(self, slot: datetime) -> None:
        # The wall clock is what moves: no event tells of it, so read it again.
        while (remaining := (slot - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, _RECHECK_SECONDS))

    async def run_slot(self, slot: datetime) -> None:
        """Start the slot's drills (those another server started already are left)."""
        directory = await self._service.directory()
        for department in self._departments(directory):
            try:
                started = await self._service.start_drill(
                    department, requested_by=SCHEDULE, scheduled_for=slot
                )
            except Exception:
                # PostgreSQL away: another server may start it; none catches it up later.
                logger.exception("cannot start the scheduled drill of %s", department.name)
                continue
            if started.outcome is DrillStartOutcome.STARTED:
                logger.info(
                    "scheduled drill %s of %s started",
                    started.alarm.id if started.alarm else "?",
                    department.name,
                )
            elif started.outcome is DrillStartOutcome.SLOT_TAKEN:
                logger.debug("the drill of %s at %s runs elsewhere", department.name, slot)
            else:
                await self._refused(slot, department, started.outcome, started.alarm)

    def _departments(self, directory: Directory) -> Sequence[Department]:
        wanted = self._settings.departments
        if not wanted:
            return directory.departments
        by_name = {department.name.lower(): department for department in directory.departments}
        found = []
        for name in wanted:
            department = by_name.get(name.strip().lower())
            if department is None:
                logger.error("[drill] departments names %r, which does not exist", name)
            else:
                found.append(department)
        return found

    async def _refused(
        self, slot: datetime, department: Department, outcome: DrillStartOutcome, alarm: object
    ) -> None:
        logger.warning(
            "scheduled drill of %s at %s not started: %s", department.name, slot, outcome.value
        )
        await self._recorder.record(
            HistoryEvent(
                EventKind.DRILL_REFUSED,
                None,
                None,
                department.name,
                {
                    "reason": outcome.value,
                    "requested_by": SCHEDULE,
                    "scheduled_for": slot.isoformat(),
                    "alarm": getattr(alarm, "id", None),
                    "instance": self._instance_id,
                },
                event_id=slot_event_id(slot, department.id),
            )
        )
