"""What every running server must hear at once: ``NOTIFY`` on two channels, and the one
connection each server keeps listening on them.

- ``fastagi_alarms``: an alarm was deactivated (:meth:`AlarmStore.deactivate
  <fastagi.store.alarms.AlarmStore.deactivate>`). Payload ``"<alarm id>"`` when nobody
  finished the deactivation (the CLI: its leader hangs up, puts the lamps out and tells
  the listeners), or ``"<alarm id> <instance>"`` when that server did it itself (its
  leader, if another, only stops paging). Or a drill was started outside a server
  (``fastagi drill``): ``"+<alarm id>"``, so that a server leads it at once rather than
  at its next scan. (A server older than drills reads that as a deactivation of an
  alarm that is active, and does nothing.)
- ``fastagi_page``: someone asked (the web console) that an alarm page its announcement
  now; payload ``"<alarm id>"``. Its leader starts the next cycle at once; the gate
  before every page still refuses a deactivated alarm.
- ``fastagi_config``: an administrator changed departments, mappings, paging groups,
  devices, deactivators, the policy or an interval (every function of fastagi/admin).
  Sent by :func:`record_config_change` in the transaction of the change's audit event,
  so it is delivered when that commits. Payload: the action (``"department add"``).

Theory of operation of :class:`ChannelListener` (and :class:`ChangeListener`, the
servers' own). PostgreSQL delivers a notification only
to sessions listening at that moment; nothing is queued for a session that is gone. So
the listening connection is watched: asyncpg calls its termination listener as soon as
the connection is lost (PostgreSQL stopped or restarted, the backend terminated, the
network cut), and the listener arms itself again on a new connection, with backoff and
jitter, until PostgreSQL answers. Whatever was notified meanwhile is lost, so once armed
again it calls ``on_rearmed``: the service then scans the alarms and reloads the
directory, which is what the lost notifications would have made it do. A half-open
connection (a host that vanished without a reset) gives no such signal: :meth:`check`,
run by the service's maintenance, asks it a question with a deadline and replaces it
when no answer comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg

from fastagi.domain.events import HistoryEvent
from fastagi.store._common import Connection
from fastagi.store.history import insert_event
from fastagi.store.pool import release_session

logger = logging.getLogger(__name__)

ALARMS_CHANNEL = "fastagi_alarms"
CONFIG_CHANNEL = "fastagi_config"
PAGE_CHANNEL = "fastagi_page"

# Re-arming after a lost connection: first pause, longest pause (each doubles, jittered).
REARM_FIRST_DELAY = 0.1
REARM_MAX_DELAY = 0.5
# Deadline of one attempt to connect and LISTEN, and of the health check's question.
ARM_TIMEOUT = 5.0


@dataclass(frozen=True)
class AlarmChange:
    """One ``fastagi_alarms`` notification: a deactivation committed, or a drill started."""

    alarm_id: int
    # The instance that finished the deactivation itself (hung up, lamps, listeners);
    # None: nobody did (the CLI), the alarm's leader does.
    finished_by: str | None = None
    # A drill started by the CLI: nobody leads it yet.
    started: bool = False

    def payload(self) -> str:
        if self.started:
            return f"+{self.alarm_id}"
        if self.finished_by is None:
            return str(self.alarm_id)
        return f"{self.alarm_id} {self.finished_by}"

    @classmethod
    def parse(cls, payload: object) -> AlarmChange | None:
        """The change a payload names, or None when it is not one of ours."""
        alarm_id, _, finished_by = str(payload).strip().partition(" ")
        started = alarm_id.startswith("+")
        try:
            number = int(alarm_id.removeprefix("+"))
        except ValueError:
            return None
        if started:
            return cls(number, started=True)
        return cls(number, finished_by.strip() or None)


async def notify_alarm_change(connection: Connection, change: AlarmChange) -> None:
    """Queue the notification in ``connection``'s transaction (sent when it commits)."""
    await connection.execute("SELECT pg_notify($1, $2)", ALARMS_CHANNEL, change.payload())


async def record_config_change(pool: asyncpg.Pool[asyncpg.Record], event: HistoryEvent) -> None:
    """Write an administrative change's audit event and notify every server, in one
    transaction: the servers hear of the change exactly when its record is committed."""
    action = str(event.details.get("action", ""))
    async with pool.acquire() as connection, connection.transaction():
        await insert_event(connection, event)
        await connection.execute("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, action)


class ChannelListener:
    """LISTEN on some channels on one connection of the pool, re-armed when it is lost.

    ``handlers`` maps each channel to a callback taking the payload. The callbacks run
    on the event loop and must not block (spawn a task for real work). ``on_lost`` is
    called when the connection is lost (notifications are missed until it is re-armed).
    """

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        handlers: Mapping[str, Callable[[str], None]],
        *,
        on_rearmed: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        first_delay: float = REARM_FIRST_DELAY,
        max_delay: float = REARM_MAX_DELAY,
    ) -> None:
        self._pool = pool
        self._handlers = dict(handlers)
        self._on_rearmed = on_rearmed
        self._on_lost = on_lost
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._connection: Connection | None = None
        self._token: object | None = None
        self._terminated: Callable[[object], None] | None = None
        self._rearming: asyncio.Task[None] | None = None
        self._closed = False
        self.armed = asyncio.Event()  # set while listening
        self.lost_at: float | None = None  # time.monotonic() of the last loss
        self.armed_at: float | None = None  # of the last (re-)arming
        self.rearms = 0

    async def start(self) -> None:
        """Listen now; raises what asyncpg raises when PostgreSQL does not answer."""
        await self._arm()

    async def check(self) -> None:
        """Ask the listening connection a question; a connection that does not answer
        (half-open) is dropped and replaced. Never raises."""
        connection = self._connection
        if connection is None or self._closed:
            return
        try:
            await connection.fetchval("SELECT 1", timeout=ARM_TIMEOUT)
        except Exception as exc:
            logger.warning("the notification connection does not answer (%r): replacing it", exc)
            self._lost(connection)

    async def close(self) -> None:
        self._closed = True
        if self._rearming is not None:
            self._rearming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rearming
        connection, self._connection = self._connection, None
        self.armed.clear()
        if connection is not None:
            await self._release(connection, self._terminated)

    # -- internals ----------------------------------------------------------------------

    async def _arm(self) -> None:
        connection = await self._pool.acquire(timeout=ARM_TIMEOUT)
        # asyncpg passes the bare connection, not the pool's proxy: a token of its own
        # tells this connection's termination from a late one of the connection before.
        token = object()

        def terminated(_connection: object) -> None:
            if token is self._token and self._connection is not None:
                self._lost(self._connection)

        try:
            for channel in self._handlers:
                await connection.add_listener(channel, self._notified)
            connection.add_termination_listener(terminated)
            await connection.fetchval("SELECT 1", timeout=ARM_TIMEOUT)  # still there?
        except BaseException:
            await self._release(connection, terminated)
            raise
        self._connection = connection
        self._token = token
        self._terminated = terminated
        self.armed_at = time.monotonic()
        self.armed.set()

    def _notified(self, _connection: object, _pid: int, channel: str, payload: object) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            handler(str(payload))

    def _lost(self, connection: Connection) -> None:
        if self._closed or connection is not self._connection:
            return
        self._connection = None
        self._token = None
        self.armed.clear()
        self.lost_at = time.monotonic()
        logger.warning("lost the connection listening for changes: listening again")
        self._on_lost()
        with contextlib.suppress(Exception):
            connection.terminate()
        if self._rearming is None or self._rearming.done():
            self._rearming = asyncio.create_task(self._rearm(connection), name="listen-rearm")

    async def _rearm(self, lost: Connection) -> None:
        await self._release(lost, None)
        delay = self._first_delay
        while not self._closed:
            try:
                await self._arm()
            except Exception as exc:
                logger.debug("cannot listen yet: %r", exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
                delay = min(delay * 2, self._max_delay)
                continue
            self.rearms += 1
            logger.warning(
                "listening for changes again %.2f s after the connection was lost",
                (self.armed_at or 0.0) - (self.lost_at or 0.0),
            )
            self._on_rearmed()
            return

    async def _release(
        self, connection: Connection, terminated: Callable[[object], None] | None
    ) -> None:
        if terminated is not None:
            # A connection asyncpg saw lost is already back in the pool: its proxy refuses.
            with contextlib.suppress(Exception):
                connection.remove_termination_listener(terminated)
        # The reset UNLISTENs and drops the callbacks.
        await release_session(self._pool, connection)


class ChangeListener(ChannelListener):
    """LISTEN on the servers' channels: deactivations, configuration changes and
    requests to page an alarm now."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        on_alarm: Callable[[AlarmChange], None],
        on_config: Callable[[str], None],
        on_page_request: Callable[[int], None] = lambda _alarm_id: None,
        on_rearmed: Callable[[], None] = lambda: None,
        first_delay: float = REARM_FIRST_DELAY,
        max_delay: float = REARM_MAX_DELAY,
    ) -> None:
        def alarm(payload: str) -> None:
            change = AlarmChange.parse(payload)
            if change is None:
                logger.warning("ignored a %s notification: %r", ALARMS_CHANNEL, payload)
                return
            on_alarm(change)

        def page_request(payload: str) -> None:
            try:
                alarm_id = int(payload)
            except ValueError:
                logger.warning("ignored a %s notification: %r", PAGE_CHANNEL, payload)
                return
            on_page_request(alarm_id)

        super().__init__(
            pool,
            {ALARMS_CHANNEL: alarm, CONFIG_CHANNEL: on_config, PAGE_CHANNEL: page_request},
            on_rearmed=on_rearmed,
            first_delay=first_delay,
            max_delay=max_delay,
        )


class ChangeStore:
    """The notifications of one pool: what :class:`~fastagi.store.Stores` offers."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def record_config_change(self, event: HistoryEvent) -> None:
        await record_config_change(self._pool, event)

    def listener(
        self,
        *,
        on_alarm: Callable[[AlarmChange], None],
        on_config: Callable[[str], None],
        on_page_request: Callable[[int], None] = lambda _alarm_id: None,
        on_rearmed: Callable[[], None] = lambda: None,
    ) -> ChangeListener:
        """A listener on this pool (not listening until :meth:`ChangeListener.start`)."""
        return ChangeListener(
            self._pool,
            on_alarm=on_alarm,
            on_config=on_config,
            on_page_request=on_page_request,
            on_rearmed=on_rearmed,
        )

    async def request_page(self, alarm_id: int, event: HistoryEvent) -> bool:
        """Ask the alarm's leader to page it now: the request's event and ``NOTIFY
        fastagi_page`` in one transaction, while the row is locked and active. False
        (nothing written) when the alarm is not active."""
        async with self._pool.acquire() as connection, connection.transaction():
            active = await connection.fetchval(
                "SELECT true FROM alarms WHERE id = $1 AND state = 'active' FOR SHARE",
                alarm_id,
            )
            if not active:
                return False
            await insert_event(connection, event)
            await connection.execute("SELECT pg_notify($1, $2)", PAGE_CHANNEL, str(alarm_id))
            return True
