"""The alarm service: activates, deactivates, and runs the paging loops this server leads.

Theory of operation. Alarm state lives in PostgreSQL (``AlarmStore``); this service is
the only writer of it in a server. Several servers may share one database (FreePBX with
``hagi://`` fail-over); each active alarm must be paged by exactly one of them. The one
that pages an alarm, its *leader*, holds ``pg_try_advisory_lock(namespace, alarm_id)`` on
a connection the service keeps for that alone. Session-level advisory locks end with
their session, so when a leader dies (or its database connection does), the lock is free
and another server's takeover scan, every ``takeover_interval`` seconds, takes the lock
and resumes the loop where the dead leader's schedule left it.

A deactivation is written by whoever receives it (a call flow here, the CLI, another
server); the store's ``NOTIFY fastagi_alarms`` reaches every server, and the leader
stops the loop and hangs up the page in progress. The takeover scan doubles as a
safety net for a lost notification: it stops every loop whose alarm is no longer active.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from fastagi.alarms.directory import Department, Directory, alarm_key, department_name
from fastagi.alarms.events import EventKind, HistoryEvent
from fastagi.alarms.lamps import LampChange, Lamps
from fastagi.alarms.loop import AlarmLoop
from fastagi.alarms.model import announcement_text
from fastagi.alarms.paging import Pager
from fastagi.config import AlarmSettings
from fastagi.store.alarms import Alarm, AlarmStore
from fastagi.tts import TextToSpeech, TtsError, fallback_announcement

logger = logging.getLogger(__name__)

# How long close() lets a page in progress finish before cancelling its loop.
_CLOSE_GRACE = 5.0
# Events that PostgreSQL did not take are kept (and retried) up to this many.
_BACKLOG_LIMIT = 10_000


@dataclass(frozen=True)
class Activation:
    alarm: Alarm
    created: bool  # False: a re-trigger of the key's active alarm


class AlarmListener(Protocol):
    """Told when an alarm begins and ends, by the server that leads it (so once per
    alarm across servers, whoever deactivated it: a call, the CLI, another server).

    Called from a task of its own: a slow or failing listener (an SMTP server that
    hangs, an emergency call that cannot be placed) never delays paging.
    """

    async def alarm_started(self, alarm: Alarm) -> None: ...

    async def alarm_ended(self, alarm: Alarm) -> None: ...


class AlarmService:
    def __init__(
        self,
        store: AlarmStore,
        pager: Pager,
        lamps: Lamps,
        tts: TextToSpeech | None,
        settings: AlarmSettings,
        *,
        instance_id: str,
        pool: asyncpg.Pool[asyncpg.Record],
        listeners: Sequence[AlarmListener] = (),
    ) -> None:
        """``pool`` is the store's pool: the service takes one connection of it for the
        leader locks, and short transactions for the gate before each page."""
        self._listeners = tuple(listeners)
        self._ended: set[int] = set()
        self._store = store
        self._pager = pager
        self._lamps = lamps
        self._tts = tts
        self._settings = settings
        self.instance_id = instance_id
        self._pool = pool
        self._loops: dict[int, AlarmLoop] = {}
        self._locks = _LeaderLocks(pool, settings.lock_namespace)
        self._directory: Directory | None = None
        self._directory_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], Awaitable[None]] | None = None
        self._backlog: list[HistoryEvent] = []
        self._started = False
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for deactivations, set the lamps, and lead every alarm nobody leads."""
        self._started = True
        self._lamps.set_listener(self._record_lamps)
        self._stop_listening = await self._store.listen_changes(self._on_notify)
        await self.refresh_directory()
        await self._scan()
        self._background = asyncio.create_task(self._maintain(), name="alarm-service")

    async def close(self) -> None:
        """Stop this server's loops without deactivating anything; free the alarms."""
        if self._closed:
            return
        self._closed = True
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        if self._stop_listening is not None:
            with contextlib.suppress(Exception):
                await self._stop_listening()
        loops = list(self._loops.values())
        for alarm_loop in loops:
            alarm_loop.stop()
        for alarm_loop in loops:
            if not await alarm_loop.wait(_CLOSE_GRACE):
                await alarm_loop.cancel()
        self._loops.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_backlog()
        self._lamps.set_listener(None)
        await self._locks.close()

    # -- queries -------------------------------------------------------------------------

    async def refresh_directory(self) -> Directory:
        self._directory = await self._store.load_directory()
        self._directory_at = asyncio.get_running_loop().time()
        return self._directory

    async def directory(self) -> Directory:
        """Departments and mappings, cached; reloaded every ``directory_refresh`` s."""
        age = asyncio.get_running_loop().time() - self._directory_at
        if self._directory is None or age > self._settings.directory_refresh:
            try:
                return await self.refresh_directory()
            except Exception:
                if self._directory is None:
                    raise
                logger.warning("cannot reload departments; using the cached ones")
        return self._directory

    async def lookup(self, extension: str) -> Department | None:
        return (await self.directory()).department_for(extension)

    async def active_alarms(self) -> list[Alarm]:
        return await self._store.active_alarms()

    def leads(self, alarm_id: int) -> bool:
        """Whether this server runs the alarm's paging loop."""
        alarm_loop = self._loops.get(alarm_id)
        return alarm_loop is not None and not alarm_loop.stopping

    # -- commands ------------------------------------------------------------------------

    async def activate(
        self, extension: str, department: Department | None, *, uniqueid: str
    ) -> Activation:
        """Create the alarm of ``department`` (or of ``extension`` when unknown), or
        re-trigger it when it is already active. A new alarm pages at once."""
        name = department_name(department)
        details = {"uniqueid": uniqueid, "instance": self.instance_id}
        events = [
            HistoryEvent(kind, None, extension, name, details)
            for kind in (EventKind.ACTIVATED, EventKind.RETRIGGERED)
        ]
        alarm, created = await self._store.activate(
            alarm_key(department, extension),
            department.id if department else None,
            name,
            extension,
            events,
        )
        if created or alarm.id not in self._loops:
            # A re-triggered alarm that nobody leads (its leader died a moment ago) is
            # taken now rather than at the next scan.
            await self._lead(alarm, first_delay=0.0 if created else None)
        await self._update_lamps(causes=[alarm])
        if created:
            self._tell_listeners("alarm_started", alarm)
        return Activation(alarm, created)

    async def deactivate(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> bool:
        """Deactivate an active alarm: no page starts after this returns True.

        ``uniqueid``: the deactivating call's, recorded so the alarm's timeline includes
        that call's events (None from the CLI). False when the alarm is unknown or was no
        longer active.
        """
        alarm_loop = self._loops.get(alarm_id)
        hold = alarm_loop.hold() if alarm_loop else contextlib.nullcontext()
        async with hold:
            alarm = await self._store.get_alarm(alarm_id)
            if alarm is None:
                return False
            details = {"by": by, "reason": reason, "instance": self.instance_id}
            if uniqueid is not None:
                details["uniqueid"] = uniqueid
            event = HistoryEvent(
                EventKind.DEACTIVATED,
                alarm_id,
                alarm.extension,
                alarm.department_name,
                details,
            )
            done = await self._store.deactivate(alarm_id, by, reason, event)
            if done is None:
                return False
            if alarm_loop is not None:
                alarm_loop.stop()
        await self._stop_loop(alarm_id)
        await self._update_lamps(causes=[done])
        self._tell_listeners("alarm_ended", done)
        if self._settings.all_clear:
            self._spawn(self._all_clear(done))
        return True

    async def record(self, event: HistoryEvent) -> None:
        """Append a history event; kept and retried when PostgreSQL does not take it."""
        try:
            await self._flush_backlog()
            await self._store.append_event(event)
        except Exception as exc:
            logger.warning("cannot record %s event now (%s); kept for later", event.kind, exc)
            if len(self._backlog) < _BACKLOG_LIMIT:
                self._backlog.append(event)
            else:
                logger.error("event backlog full; lost: %s", event.to_dict())

    # -- leading -------------------------------------------------------------------------

    async def _lead(self, alarm: Alarm, *, first_delay: float | None) -> bool:
        """Take the alarm's leader lock and start its loop; False if another leads it.

        ``first_delay`` None: continue the schedule of the previous leader.
        """
        if self._closed or alarm.id in self._loops:
            return False
        if not await self._locks.acquire(alarm.id):
            return False
        # The lock may have been free because the alarm just ended: check under the lock.
        if not await self._store.is_active(alarm.id):
            await self._locks.release(alarm.id)
            return False
        fresh = await self._store.get_alarm(alarm.id) or alarm
        if first_delay is None:
            first_delay = await self._resume_delay(fresh)
            await self.record(
                HistoryEvent(
                    EventKind.RESUMED,
                    fresh.id,
                    fresh.extension,
                    fresh.department_name,
                    {"instance": self.instance_id, "first_page_in": round(first_delay, 3)},
                )
            )
        alarm_loop = AlarmLoop(
            fresh,
            store=self._store,
            pager=self._pager,
            settings=self._settings,
            tts=self._tts,
            gate=self._gate,
            record=self.record,
            first_delay=first_delay,
        )
        self._loops[fresh.id] = alarm_loop
        alarm_loop.start()
        return True

    async def _resume_delay(self, alarm: Alarm) -> float:
        """Continue the previous leader's schedule: one interval after its last page."""
        if alarm.last_cycle_at is None:
            return 0.0
        interval = await self._store.interval_seconds(alarm)
        since = (datetime.now(UTC) - alarm.last_cycle_at).total_seconds()
        return max(0.0, interval - since)

    async def _stop_loop(self, alarm_id: int) -> None:
        alarm_loop = self._loops.get(alarm_id)
        if alarm_loop is None:
            return
        alarm_loop.stop()
        if self._settings.hangup_on_deactivate:
            await self._pager.cancel(alarm_id)
        # Without hangup the announcement in progress finishes; the loop ends after it.
        if not await alarm_loop.wait(self._settings.max_page_seconds + 5):
            await alarm_loop.cancel()
        self._loops.pop(alarm_id, None)
        await self._locks.release(alarm_id)

    @contextlib.asynccontextmanager
    async def _gate(self, alarm_id: int) -> AsyncIterator[bool | None]:
        # ---- SQL of this module's own (not in AlarmStore, which has no API for it) ----
        # Reads the alarm row FOR SHARE in a transaction that lasts until the page's
        # Originate is written: a concurrent deactivation (UPDATE ... WHERE state =
        # 'active') waits for it, so it is acknowledged only after that page started, and
        # a deactivation that committed first is seen here. None: PostgreSQL cannot say.
        try:
            connection = await self._pool.acquire(timeout=5.0)
        except Exception as exc:
            logger.warning("active check of alarm %s impossible: %s", alarm_id, exc)
            yield None
            return
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
                state = await connection.fetchval(
                    "SELECT state FROM alarms WHERE id = $1 FOR SHARE", alarm_id
                )
            except Exception as exc:
                logger.warning("active check of alarm %s failed: %s", alarm_id, exc)
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                yield None
                return
            try:
                yield state == "active"
            finally:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
        finally:
            await self._pool.release(connection)

    # -- notifications and maintenance ---------------------------------------------------

    def _on_notify(self, alarm_id: int) -> None:
        # A deactivation somewhere (this server included, then the loop is gone already).
        if alarm_id in self._loops:
            self._spawn(self._check_stopped(alarm_id))

    async def _check_stopped(self, alarm_id: int) -> None:
        alarm_loop = self._loops.get(alarm_id)
        if alarm_loop is None or await self._store.is_active(alarm_id):
            return
        alarm_loop.stop()
        await self._stop_loop(alarm_id)
        await self._update_lamps(causes=[alarm_loop.alarm])
        await self._tell_listeners_ended(alarm_id)

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._settings.takeover_interval)
            try:
                if loop.time() - self._directory_at > self._settings.directory_refresh:
                    await self.refresh_directory()
                await self._flush_backlog()
                await self._scan()
            except Exception:
                logger.exception("alarm service maintenance failed; trying again")

    async def _scan(self) -> None:
        """Lead unled active alarms; stop loops of alarms that ended or were lost."""
        if not await self._locks.healthy():
            # The lock connection died, and with it every lock: another server may lead
            # our alarms by now. Stop ours; the scan below takes back those still free.
            for alarm_id in list(self._loops):
                self._loops[alarm_id].stop()
                await self._stop_loop(alarm_id)
        active = await self._store.active_alarms()
        active_ids = {alarm.id for alarm in active}
        # Alarms deactivated elsewhere (or here, a moment ago): their lamps go out now.
        ended = [lp.alarm for a, lp in self._loops.items() if a not in active_ids]
        for alarm in ended:
            await self._stop_loop(alarm.id)
            await self._tell_listeners_ended(alarm.id)
        for alarm_loop in [lp for lp in self._loops.values() if lp.done]:
            # A loop that ended on its own (its gate saw the alarm inactive).
            ended.append(alarm_loop.alarm)
            self._loops.pop(alarm_loop.alarm.id, None)
            await self._locks.release(alarm_loop.alarm.id)
        for alarm in active:
            if alarm.id not in self._loops:
                await self._lead(alarm, first_delay=None)
        await self._update_lamps(active, causes=ended)

    async def _update_lamps(
        self, active: Iterable[Alarm] | None = None, *, causes: Sequence[Alarm] = ()
    ) -> None:
        """Set the lamps for the active alarms. ``causes``: the alarms whose activation or
        deactivation this follows; a change of one of their lamps is recorded with that
        alarm's id. Without a cause (start-up, a take-over) a change has no alarm id."""
        try:
            alarms = list(active) if active is not None else await self._store.active_alarms()
            known = [d.id for d in self._directory.departments] if self._directory else []
            changes = await self._lamps.apply(alarms, known)
        except Exception:
            logger.exception("cannot update the lamps")
            return
        await self._record_lamps(changes, causes=causes)

    async def _record_lamps(
        self, changes: list[LampChange], *, causes: Sequence[Alarm] = ()
    ) -> None:
        for change in changes:
            owner = next((a for a in causes if change.device in self._lamps_of(a)), None)
            await self.record(
                HistoryEvent(
                    EventKind.LAMP_CHANGED,
                    owner.id if owner else None,
                    owner.extension if owner else None,
                    owner.department_name if owner else None,
                    {
                        "device": change.device,
                        "state": change.state,
                        "previous": change.previous,
                        "instance": self.instance_id,
                    },
                )
            )

    def _lamps_of(self, alarm: Alarm) -> set[str]:
        """The lamps an alarm lights. Only their changes belong to its history: the same
        apply may also put out another department's lamp, or light one of an alarm that
        started meanwhile."""
        lamps = {self._settings.lamp_device}
        if alarm.department_id is not None:
            lamps.add(f"{self._settings.department_lamp_prefix}{alarm.department_id}")
        return lamps

    async def _all_clear(self, alarm: Alarm) -> None:
        text = announcement_text(
            self._settings.all_clear_text, alarm.department_name, alarm.extension
        )
        prompts: list[str]
        try:
            if self._tts is None:
                raise TtsError("no text-to-speech service")
            prompts = [(await self._tts.render(text)).asterisk_name]
        except TtsError:
            prompts = ["beep", *fallback_announcement(alarm.extension)[2:]]
        devices = (
            await self._store.paging_devices(alarm)
            if alarm.department_id is not None
            else tuple(self._settings.unknown_department_devices)
        )
        result = await self._pager.page(alarm.id, alarm.cycles + 1_000_000, devices, prompts)
        await self.record(
            HistoryEvent(
                EventKind.ALL_CLEAR,
                alarm.id,
                alarm.extension,
                alarm.department_name,
                result.details(),
            )
        )

    async def _flush_backlog(self) -> None:
        while self._backlog:
            await self._store.append_event(self._backlog[0])
            self._backlog.pop(0)

    def _tell_listeners(self, method: str, alarm: Alarm) -> None:
        if method == "alarm_ended":
            if alarm.id in self._ended:
                return  # told already (a local deactivation also arrives as a NOTIFY)
            self._ended.add(alarm.id)
        for listener in self._listeners:
            self._spawn(self._call_listener(listener, method, alarm))

    async def _tell_listeners_ended(self, alarm_id: int) -> None:
        alarm = await self._store.get_alarm(alarm_id)
        if alarm is not None and not alarm.is_active:
            self._tell_listeners("alarm_ended", alarm)

    @staticmethod
    async def _call_listener(listener: AlarmListener, method: str, alarm: Alarm) -> None:
        try:
            await getattr(listener, method)(alarm)
        except Exception:
            logger.exception(
                "alarm listener %r failed on %s of alarm %s", listener, method, alarm.id
            )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coroutine
            except Exception:
                logger.exception("alarm service task failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _LeaderLocks:
    """Session-level advisory locks on one dedicated connection of the pool.

    ---- SQL of this module's own: AlarmStore has no API for leader locks. ----
    A session lock is re-entrant (a second pg_try_advisory_lock of the same key in the
    same session succeeds and must be unlocked twice), so we keep the set we hold.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], namespace: int) -> None:
        self._pool = pool
        self._namespace = namespace
        self._connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None
        self._held: set[int] = set()
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def _conn(self) -> asyncpg.pool.PoolConnectionProxy[asyncpg.Record]:
        if self._connection is None or self._connection.is_closed():
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._pool.release(self._connection)
            self._held.clear()  # a new session holds nothing
            self._connection = await self._pool.acquire()
        return self._connection

    async def acquire(self, alarm_id: int) -> bool:
        async with self._lock:
            if alarm_id in self._held:
                return True
            connection = await self._conn()
            taken = bool(
                await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1::int, $2::int)", self._namespace, alarm_id
                )
            )
            if taken:
                self._held.add(alarm_id)
            return taken

    async def release(self, alarm_id: int) -> None:
        async with self._lock:
            if alarm_id not in self._held or self._connection is None:
                return
            self._held.discard(alarm_id)
            with contextlib.suppress(Exception):
                await self._connection.fetchval(
                    "SELECT pg_advisory_unlock($1::int, $2::int)", self._namespace, alarm_id
                )

    async def healthy(self) -> bool:
        """False when the connection (and so every lock we held) was lost."""
        async with self._lock:
            if self._connection is None:
                return True
            try:
                await self._connection.fetchval("SELECT 1")
            except Exception:
                with contextlib.suppress(Exception):
                    self._connection.terminate()
                self._connection = None
                lost = bool(self._held)
                self._held.clear()
                return not lost
            return True

    async def close(self) -> None:
        async with self._lock:
            if self._connection is None:
                return
            with contextlib.suppress(Exception):
                await self._connection.fetchval("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(Exception):
                await self._pool.release(self._connection)
            self._connection = None
            self._held.clear()
