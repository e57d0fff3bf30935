"""Who is told when an alarm begins and ends (e-mail and SMS, the emergency caller), by
the server that leads it: so once per alarm across servers, whoever deactivated it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from fastagi.domain.alarm import Alarm

logger = logging.getLogger(__name__)

# How long close() waits for the listeners told last. They only queue (the notifier) or
# start and stop tasks (the emergency caller): milliseconds, unless one misbehaves.
_CLOSE_GRACE = 5.0


class AlarmListener(Protocol):
    """Called from a task of its own: a slow or failing listener (an SMTP server that
    hangs, an emergency call that cannot be placed) never delays paging."""

    async def alarm_started(self, alarm: Alarm) -> None: ...

    async def alarm_ended(self, alarm: Alarm) -> None: ...

    async def drill_paged(self, alarm: Alarm) -> None:
        """A drill paged its last cycle: return once this listener's part of it is done
        (the emergency caller: its calls). The drill ends after that."""


class Listeners:
    def __init__(self, listeners: Sequence[AlarmListener]) -> None:
        self._listeners = tuple(listeners)
        self._ended: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def started(self, alarm: Alarm) -> None:
        for listener in self._listeners:
            self._spawn(listener.alarm_started(alarm), listener, "start", alarm)

    def ended(self, alarm: Alarm) -> None:
        if alarm.id in self._ended:
            return  # told already (a local deactivation also arrives as a NOTIFY)
        self._ended.add(alarm.id)
        for listener in self._listeners:
            self._spawn(listener.alarm_ended(alarm), listener, "end", alarm)

    def _spawn(
        self, call: Awaitable[None], listener: AlarmListener, what: str, alarm: Alarm
    ) -> None:
        async def run() -> None:
            try:
                await call
            except Exception:
                logger.exception(
                    "alarm listener %r failed on the %s of alarm %s", listener, what, alarm.id
                )

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drill_paged(self, alarm: Alarm, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until every listener is done with the drill, at most ``timeout`` s."""
        calls = [asyncio.ensure_future(listener.drill_paged(alarm)) for listener in self._listeners]
        if not calls:
            return
        done, pending = await asyncio.wait(calls, timeout=timeout)
        for call in pending:
            logger.warning("drill %s: a listener is not done after %g s", alarm.id, timeout)
            call.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for call in done:
            if call.exception() is not None:
                logger.error(
                    "alarm listener failed at the end of drill %s",
                    alarm.id,
                    exc_info=call.exception(),
                )

    async def close(self, grace: float = _CLOSE_GRACE) -> None:
        """Let the listeners told last finish (an alarm that ended a moment before the
        shutdown still gets its e-mail queued), for at most ``grace`` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
