"""Alarm listeners are told from tasks of their own, and a shutdown right after an alarm
ended still lets them finish (the "alarm ended" e-mail is not lost)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastagi.alarms.listeners import Listeners
from fastagi.domain.alarm import Alarm

ALARM = Alarm(
    id=7,
    alarm_key="department:1",
    department_id=1,
    department_name="Emergency Room",
    extension="101",
    state="deactivated",
    activated_at=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    deactivated_at=datetime(2026, 11, 27, 10, 5, tzinfo=UTC),
    deactivated_by="150",
    deactivation_reason="test",
    cycles=3,
    last_cycle_at=None,
)


class SlowListener:
    """Takes a few turns of the loop, as queueing a notification does."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int]] = []

    async def alarm_started(self, alarm: Alarm) -> None:
        await self._work()
        self.told.append(("started", alarm.id))

    async def alarm_ended(self, alarm: Alarm) -> None:
        await self._work()
        self.told.append(("ended", alarm.id))

    async def drill_paged(self, alarm: Alarm) -> None: ...

    @staticmethod
    async def _work() -> None:
        for _ in range(5):
            await asyncio.sleep(0)


async def test_close_right_after_an_alarm_ended_lets_the_listeners_finish() -> None:
    listener = SlowListener()
    listeners = Listeners([listener])

    listeners.ended(ALARM)
    await listeners.close()

    assert listener.told == [("ended", 7)]


async def test_an_alarm_is_told_ended_once() -> None:
    listener = SlowListener()
    listeners = Listeners([listener])

    listeners.ended(ALARM)
    listeners.ended(ALARM)  # a local deactivation also arrives as a NOTIFY
    await listeners.close()

    assert listener.told == [("ended", 7)]


async def test_a_listener_that_hangs_is_cancelled_after_the_grace() -> None:
    class Hanging:
        cancelled = False

        async def alarm_started(self, alarm: Alarm) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise

        async def alarm_ended(self, alarm: Alarm) -> None: ...

        async def drill_paged(self, alarm: Alarm) -> None: ...

    hanging = Hanging()
    listeners = Listeners([hanging])
    listeners.started(ALARM)
    await asyncio.sleep(0)

    await listeners.close(grace=0.01)

    assert hanging.cancelled
