"""What the alarm service needs to go on while PostgreSQL is down.

- :class:`Outage`: whether the database is known to be down, logged once when it goes
  and once when it comes back (not once per call that fails meanwhile). A call that
  fails is not enough to say so: a pool with no connection free times out the same way
  (1,000 alarms activated at once did, docs/performance.md), and an outage refuses every
  deactivation until the maintenance sees PostgreSQL again. So the outage is declared
  only once PostgreSQL does not answer a connection of its own either (the probe).
- :class:`CachedLoopStore`: the paging loop's store, answering with what PostgreSQL said
  last for the alarm, or from the service's cached
  :class:`~fastagi.domain.directory.Directory` (departments, paging devices, intervals),
  when PostgreSQL does not, so paging goes on at the same interval to the same phones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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


# How often a probe may find PostgreSQL answering while calls keep failing: the calls
# of a busy pool fail by the hundred, and each need not open a connection to learn it.
_PROBE_EVERY = 1.0
# How often the log says PostgreSQL still does not answer, or answers while calls fail.
_REPEAT_LOG_EVERY = 60.0


class Outage:
    """PostgreSQL's availability as the alarm service saw it last.

    ``probe``: asks PostgreSQL on a connection of its own (not the pool's) whether it
    answers, raising if not. Without one, the first failed call declares the outage."""

    def __init__(self, probe: Callable[[], Awaitable[object]] | None = None) -> None:
        self.since: float | None = None  # time.monotonic() of the first failure
        self.recovered_at: float | None = None  # of the last recovery
        self.down_before = 0.0  # seconds down in the outages that ended
        self._probe = probe
        self._probing: asyncio.Task[None] | None = None
        self._answered_at = -math.inf  # time.monotonic() of the last probe answered
        self._logged_at = -math.inf  # of the last repeated log line

    def down_seconds(self, now: float | None = None) -> float:
        """Seconds PostgreSQL was down since start, the outage in progress included."""
        ongoing = 0.0
        if self.since is not None:
            ongoing = (time.monotonic() if now is None else now) - self.since
        return self.down_before + ongoing

    @property
    def down(self) -> bool:
        return self.since is not None

    def suspect(self, what: str, exc: BaseException, deadline: float) -> None:
        """A call failed with ``exc``: PostgreSQL may be down, or only busy. Declares the
        outage once the probe (within ``deadline`` seconds, in the background) finds
        PostgreSQL not answering either; while it runs, calls still try PostgreSQL."""
        if self.down:
            self._still_down(exc)
            return
        if self._probe is None:
            self.failed(what, exc)
            return
        if self._probing is not None or time.monotonic() - self._answered_at < _PROBE_EVERY:
            return
        self._probing = asyncio.create_task(self._confirm(self._probe, what, exc, deadline))

    async def probed(self) -> None:
        """Wait for the probe in progress, if any, to decide."""
        if self._probing is not None:
            await asyncio.shield(self._probing)

    async def close(self) -> None:
        """Stop the probe in progress, if any: nothing is left to decide for."""
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing

    async def _confirm(
        self,
        probe: Callable[[], Awaitable[object]],
        what: str,
        exc: BaseException,
        deadline: float,
    ) -> None:
        try:
            async with asyncio.timeout(deadline):
                await probe()
        except Exception as probe_exc:
            self.failed(what, exc)
            logger.error("PostgreSQL does not answer a connection of its own: %r", probe_exc)
        else:
            self._answered_at = time.monotonic()
            if self._answered_at - self._logged_at >= _REPEAT_LOG_EVERY:
                self._logged_at = self._answered_at
                logger.warning(
                    "%s failed (%r), but PostgreSQL answers a connection of its own: no "
                    "outage; a busy pool times out too (said once a minute at most)",
                    what,
                    exc,
                )
        finally:
            self._probing = None

    def _still_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _REPEAT_LOG_EVERY:
            self._logged_at = now
            logger.error(
                "PostgreSQL still unavailable after %.0f s (%r); paging from the cached "
                "directory (said once a minute at most)",
                self.down_seconds(now),
                exc,
            )

    def failed(self, what: str, exc: BaseException) -> None:
        """Declare the outage (at once: see :meth:`suspect`)."""
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
            self.suspect(what, exc, deadline)
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
