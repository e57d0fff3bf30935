"""Acting on an alarm from outside a call (the CLI, the web console): deactivating it
(the row, its event and the ``NOTIFY`` that makes its leader stop paging:
fastagi/store/alarms.py), and asking its leader to page the announcement now."""

from __future__ import annotations

from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores


async def deactivate_alarm(
    stores: Stores, alarm_id: int, *, reason: str, by: str, source: str = "cli"
) -> Alarm:
    """``source``: where it came from, as the history records it (``cli``, ``web``)."""
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        raise StoreError(f"unknown alarm {alarm_id}")
    reason = reason.strip()
    if not reason:
        raise StoreError("give a reason")
    if len(reason) > 500:
        raise StoreError("the reason is too long (at most 500 characters)")
    event = HistoryEvent(
        kind=EventKind.DEACTIVATED,
        alarm_id=alarm.id,
        extension=None,
        department=alarm.department_name,
        details={"by": by, "reason": reason, "source": source},
    )
    done = await stores.alarms.deactivate(alarm.id, by, reason, event)
    if done is None:
        raise StoreError(f"alarm {alarm.id} is not active")
    return done


async def request_page(stores: Stores, alarm_id: int, *, by: str, source: str = "web") -> Alarm:
    """Ask the alarm's leader, whichever server it is, to page the announcement now
    (``NOTIFY fastagi_page``; it starts its next cycle at once, through the same gate
    as every page, so a deactivated alarm is never paged). Recorded as
    ``page_requested`` with who asked. Refused for an alarm that is not active."""
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        raise StoreError(f"unknown alarm {alarm_id}")
    event = HistoryEvent(
        kind=EventKind.PAGE_REQUESTED,
        alarm_id=alarm.id,
        extension=alarm.extension,
        department=alarm.department_name,
        details={"by": by, "source": source},
    )
    if not await stores.changes.request_page(alarm.id, event):
        raise StoreError(f"alarm {alarm.id} is not active")
    return alarm
