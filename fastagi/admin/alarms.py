"""Deactivating an alarm from outside a call (the CLI): the row, its event and the
``NOTIFY`` that makes its leader stop paging (fastagi/store/alarms.py)."""

from __future__ import annotations

from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores


async def deactivate_alarm(stores: Stores, alarm_id: int, *, reason: str, by: str) -> Alarm:
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        raise StoreError(f"unknown alarm {alarm_id}")
    reason = reason.strip()
    if not reason:
        raise StoreError("give a reason")
    event = HistoryEvent(
        kind=EventKind.DEACTIVATED,
        alarm_id=alarm.id,
        extension=None,
        department=alarm.department_name,
        details={"by": by, "reason": reason, "source": "cli"},
    )
    done = await stores.alarms.deactivate(alarm.id, by, reason, event)
    if done is None:
        raise StoreError(f"alarm {alarm.id} is not active")
    return done
