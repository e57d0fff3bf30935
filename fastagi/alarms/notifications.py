"""The alarm's e-mails and SMS: an :class:`~fastagi.alarms.listeners.AlarmListener` that
hands the alarm's beginning and end (and the emergency call's acknowledgement and
escalation) to the notifier, which queues and returns at once.

A drill's are sent only with ``[drill] notify``, each marked ``[TEST]``: a drill never
sends what reads as a real alarm."""

from __future__ import annotations

from datetime import datetime

from fastagi.alarms.emergency import AlarmLike
from fastagi.domain.alarm import Alarm
from fastagi.notify import Notifier, NotifyKind
from fastagi.store.alarms import AlarmStore


class AlarmNotifications:
    def __init__(self, notifier: Notifier, alarms: AlarmStore, *, drills: bool = False) -> None:
        """``drills``: send a drill's notifications too ([TEST]); off, none."""
        self._notifier = notifier
        self._alarms = alarms
        self._drills = drills

    async def alarm_started(self, alarm: Alarm) -> None:
        await self._send("activated", alarm)

    async def alarm_ended(self, alarm: Alarm) -> None:
        await self._send(
            "deactivated",
            alarm,
            at=alarm.deactivated_at,
            by=alarm.deactivated_by,
            reason=alarm.deactivation_reason,
        )

    async def drill_paged(self, alarm: Alarm) -> None:
        """Nothing to wait for: the notifications are queued already."""

    # The emergency caller's hooks: it knows the alarm by id, department and extension;
    # the message also gives the activation time, read from the row.

    async def acknowledged(self, emergency: AlarmLike, by: str) -> None:
        alarm = await self._alarms.get_alarm(emergency.id)
        if alarm is not None:
            await self._send("acknowledged", alarm, by=by)

    async def escalated(self, emergency: AlarmLike) -> None:
        alarm = await self._alarms.get_alarm(emergency.id)
        if alarm is not None:
            await self._send("escalated", alarm)

    async def _send(
        self,
        kind: NotifyKind,
        alarm: Alarm,
        *,
        at: datetime | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> None:
        if alarm.drill is not None and not self._drills:
            return
        await self._notifier.notify(
            kind,
            alarm_id=alarm.id,
            department=alarm.department_name,
            extension=alarm.extension,
            activated_at=alarm.activated_at,
            at=at,
            by=by,
            reason=reason,
            drill=alarm.drill is not None,
        )
