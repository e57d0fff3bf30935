"""Provisional alarms: raised while PostgreSQL is down, given their row when it is back.

A trigger that PostgreSQL does not answer still raises an alarm: a *provisional* one, with
a negative id, in memory only, keyed by its alarm key (a re-trigger joins it), paging at
once from the cached directory, its events journalled. When PostgreSQL is back it is
activated for real with the same key (or merged into the key's alarm another server
raised meanwhile), and a rekey line in the journal maps its journalled events to the row.
Its ``activated`` event carries what a later start needs to raise it for real, should
this process die before PostgreSQL returns (:meth:`ProvisionalAlarms.promote_leftovers`).
"""

from __future__ import annotations

import itertools
import logging
import random
from datetime import UTC, datetime

from fastagi.alarms.recorder import HistoryRecorder
from fastagi.domain.alarm import ACTIVE, Alarm
from fastagi.domain.directory import Department, department_name
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.alarms import AlarmStore
from fastagi.store.journal import Rekey

logger = logging.getLogger(__name__)


class ProvisionalAlarms:
    def __init__(self, alarms: AlarmStore, recorder: HistoryRecorder) -> None:
        self._alarms = alarms
        self._recorder = recorder
        self._by_id: dict[int, Alarm] = {}
        # Random start: provisional ids of two runs never meet in one journal.
        self._ids = itertools.count(random.randint(1, 2**30))  # noqa: S311

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self._by_id)

    async def raise_alarm(
        self, key: str, extension: str, department: Department | None, details: dict[str, str]
    ) -> Alarm:
        name = department_name(department)
        alarm = Alarm(
            id=-next(self._ids),
            alarm_key=key,
            department_id=department.id if department else None,
            department_name=name,
            extension=extension,
            state=ACTIVE,
            activated_at=datetime.now(UTC),
            deactivated_at=None,
            deactivated_by=None,
            deactivation_reason=None,
            cycles=0,
            last_cycle_at=None,
        )
        logger.error(
            "alarm %s raised without PostgreSQL (provisional id %s); paging from the cache",
            key,
            alarm.id,
        )
        self._by_id[alarm.id] = alarm
        offline = {
            **details,
            "alarm_key": key,
            "department_id": alarm.department_id,
            "offline": True,
        }
        await self._recorder.record(
            HistoryEvent(EventKind.ACTIVATED, alarm.id, extension, name, offline)
        )
        return alarm

    async def promote(self, provisional: int) -> tuple[Alarm, bool]:
        """Give a provisional alarm its row (or merge it into the key's active alarm):
        the row, and whether it was created."""
        alarm = self._by_id[provisional]
        row, created = await self._alarms.activate(
            alarm.alarm_key, alarm.department_id, alarm.department_name, alarm.extension
        )
        await self._recorder.journal.append_rekey(Rekey(provisional, row.id, merged=not created))
        del self._by_id[provisional]
        logger.warning(
            "provisional alarm %s is alarm %s now%s",
            provisional,
            row.id,
            "" if created else " (raised meanwhile by another server: merged)",
        )
        return row, created

    async def promote_leftovers(self) -> list[Alarm]:
        """Raise for real the alarms a previous run raised without PostgreSQL and could not
        promote before it ended (their ``activated`` event is in the journal, unmapped).
        Returns the rows created."""
        journal = self._recorder.journal
        created_rows = []
        for event in await journal.events():
            if (
                event.kind is not EventKind.ACTIVATED
                or event.alarm_id is None
                or event.alarm_id > 0
                or journal.mapped(event.alarm_id)
                or not isinstance(event.details.get("alarm_key"), str)
            ):
                continue
            department_id = event.details.get("department_id")
            row, created = await self._alarms.activate(
                event.details["alarm_key"],
                department_id if isinstance(department_id, int) else None,
                event.department or "",
                event.extension or "",
            )
            await journal.append_rekey(Rekey(event.alarm_id, row.id, merged=not created))
            logger.warning(
                "alarm %s, raised without PostgreSQL by a previous run, is alarm %s now",
                event.alarm_id,
                row.id,
            )
            if created:
                created_rows.append(row)
        return created_rows
