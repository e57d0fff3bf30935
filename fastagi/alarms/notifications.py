"""The alarm's e-mails and SMS: an :class:`~fastagi.alarms.service.AlarmListener` that
hands the alarm's beginning and end to the notifier, which queues and returns at once."""

from __future__ import annotations

from fastagi.notify import Notifier
from fastagi.store.alarms import Alarm


class AlarmNotifications:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def alarm_started(self, alarm: Alarm) -> None:
        await self._notifier.notify(
            "activated",
            alarm_id=alarm.id,
            department=alarm.department_name,
            extension=alarm.extension,
            activated_at=alarm.activated_at,
        )

    async def alarm_ended(self, alarm: Alarm) -> None:
        await self._notifier.notify(
            "deactivated",
            alarm_id=alarm.id,
            department=alarm.department_name,
            extension=alarm.extension,
            activated_at=alarm.activated_at,
            at=alarm.deactivated_at,
            by=alarm.deactivated_by,
            reason=alarm.deactivation_reason,
        )
