"""The alarm's e-mails and SMS: an :class:`~fastagi.alarms.service.AlarmListener` that
hands the alarm's beginning and end (and the emergency call's acknowledgement and
escalation) to the notifier, which queues and returns at once."""

from __future__ import annotations

from fastagi.alarms.emergency import AlarmLike
from fastagi.notify import Notifier
from fastagi.store.alarms import Alarm, AlarmStore


class AlarmNotifications:
    def __init__(self, notifier: Notifier, store: AlarmStore) -> None:
        self._notifier = notifier
        self._store = store

    async def alarm_started(self, alarm: Alarm) -> None:
        await self._notifier.notify(
            "activated",
            alarm_id=alarm.id,
            department=alarm.department_name,
            extension=alarm.extension,
            activated_at=alarm.activated_at,
        )

    async def acknowledged(self, emergency: AlarmLike, by: str) -> None:
        alarm = await self._store.get_alarm(emergency.id)
        if alarm is None:
            return
        await self._notifier.notify(
            "acknowledged",
            alarm_id=alarm.id,
            department=alarm.department_name,
            extension=alarm.extension,
            activated_at=alarm.activated_at,
            by=by,
        )

    async def escalated(self, emergency: AlarmLike) -> None:
        alarm = await self._store.get_alarm(emergency.id)
        if alarm is None:
            return
        await self._notifier.notify(
            "escalated",
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
