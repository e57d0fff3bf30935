"""What the alarm service needs to go on while PostgreSQL is down.

- :class:`Outage`: whether the database is known to be down, logged once when it goes
  and once when it comes back (not once per call that fails meanwhile).
- :class:`CachedLoopStore`: the paging loop's store, answering with what PostgreSQL said
  last for the alarm, or from the service's cached
  :class:`~fastagi.domain.directory.Directory` (departments, paging devices, intervals),
  when PostgreSQL does not, so paging goes on at the same interval to the same phones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import Directory
from fastagi.domain.events import HistoryEvent
from fastagi.store import Stores

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class DatabaseDown(Exception):
    """PostgreSQL is known to be down: not even tried (the outage's first failure was)."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL cannot be reached (rather than a bug or bad data)."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | DatabaseDown
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.InterfaceError,
    )


class Outage:
    """PostgreSQL's availability as the alarm service saw it last."""

    def __init__(self) -> None:
        self.since: float | None = None  # time.monotonic() of the first failure
        self.recovered_at: float | None = None  # of the last recovery
        self.down_before = 0.0  # seconds down in the outages that ended

    def down_seconds(self, now: float | None = None) -> float:
        """Seconds PostgreSQL was down since start, the outage in progress included."""
        ongoing = 0.0
        if self.since is not None:
            ongoing = (time.monotonic() if now is None else now) - self.since
        return self.down_before + ongoing

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.error(
                "PostgreSQL unavailable (%s: %r): paging goes on from the cached directory, "
                "history events go to the journal",
                what,
                exc,
            )

    async def call(self, what: str, call: Callable[[], Awaitable[_T]], deadline: float) -> _T:
        """A PostgreSQL call with a deadline; not even tried while PostgreSQL is known to
        be down (the service's maintenance finds out when it is back)."""
        if self.down:
            raise DatabaseDown(what)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for runs the call in a task of
            # its own, one per history event of every call (what 3.12's wait_for does).
            async with asyncio.timeout(deadline):
                return await call()
        except Exception as exc:
            self.failed(what, exc)
            raise

    def recovered(self) -> float | None:
        """Mark PostgreSQL as back; the outage's length, or None if there was none."""
        if self.since is None:
            return None
        self.recovered_at = time.monotonic()
        lasted = self.recovered_at - self.since
        self.down_before += lasted
        self.since = None
        logger.warning("PostgreSQL answers again after %.1f s", lasted)
        return lasted


class CachedLoopStore:
    """``LoopStore`` for the paging loops: PostgreSQL first; when it does not answer, what
    it answered last for the same alarm, else the cached directory. So a running alarm
    keeps the interval and the devices it had (an administrator's change included) while
    PostgreSQL is down, however old the directory is. Provisional alarms (negative ids:
    raised while PostgreSQL was down) have no row yet: they page from the directory and
    their cycles are never written here, the loop journals them instead."""

    def __init__(
        self,
        store: Stores,
        directory: Callable[[], Directory | None],
        outage: Outage,
        timeout: float,
    ) -> None:
        self._store = store
        self._directory = directory
        self._outage = outage
        self._timeout = timeout
        # The last answers PostgreSQL gave, per alarm id.
        self._intervals: dict[int, int] = {}
        self._devices: dict[int, tuple[str, ...]] = {}

    def forget(self, alarm_id: int) -> None:
        """The alarm's loop ended: its remembered answers go."""
        self._intervals.pop(alarm_id, None)
        self._devices.pop(alarm_id, None)

    async def _ask(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._outage.call(what, call, self._timeout)

    async def interval_seconds(self, alarm: Alarm) -> int:
        directory = self._directory()
        if alarm.id > 0 or directory is None:
            try:
                seconds = await self._ask(
                    "interval", lambda: self._store.directory.interval_seconds(alarm)
                )
            except Exception:
                if alarm.id in self._intervals:
                    return self._intervals[alarm.id]
                if directory is None:
                    raise
            else:
                if alarm.id > 0:
                    self._intervals[alarm.id] = seconds
                return seconds
        department = directory.department(alarm.department_id) if alarm.department_id else None
        return directory.interval_for(department)

    async def paging_devices(self, alarm: Alarm) -> tuple[str, ...]:
        directory = self._directory()
        if alarm.id > 0 or directory is None:
            try:
                devices = await self._ask(
                    "paging devices", lambda: self._store.directory.paging_devices(alarm)
                )
            except Exception:
                if alarm.id in self._devices:
                    return self._devices[alarm.id]
                if directory is None:
                    raise
            else:
                if alarm.id > 0:
                    self._devices[alarm.id] = devices
                return devices
        if alarm.department_id is None:
            return directory.all_devices
        department = directory.department(alarm.department_id)
        return department.devices if department is not None else ()

    async def record_cycle(self, alarm_id: int, event: HistoryEvent) -> None:
        if alarm_id < 0:
            raise DatabaseDown("a provisional alarm has no row yet")
        await self._ask("record cycle", lambda: self._store.alarms.record_cycle(alarm_id, event))
