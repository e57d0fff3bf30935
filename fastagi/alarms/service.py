"""The alarm service: activates, deactivates, and runs the paging loops this server leads.

Theory of operation. Alarm state lives in PostgreSQL (``Stores``); this service is
the only writer of it in a server. Several servers may share one database (FreePBX with
``hagi://`` fail-over); each active alarm must be paged by exactly one of them. The one
that pages an alarm, its *leader*, holds ``pg_try_advisory_lock(namespace, alarm_id)`` on
a connection the service keeps for that alone. Session-level advisory locks end with
their session, so when a leader dies (or its database connection does), the lock is free
and another server's takeover scan, every ``takeover_interval`` seconds, takes the lock
and resumes the loop where the dead leader's schedule left it: one interval after its
last page began (cycles are counted when they start, see fastagi/alarms/loop.py), the
page it died during recorded with its outcome unknown.

A deactivation is written by whoever receives it (a call flow here, the CLI, another
server); the store's ``NOTIFY fastagi_alarms`` reaches every server, and the leader
stops the loop and hangs up the page in progress. The takeover scan doubles as a
safety net for a lost notification: it stops every loop whose alarm is no longer active.

PostgreSQL down (see docs/reliability.md). Nothing that pages waits for it:

- History events it refuses go to the local :class:`~fastagi.store.journal.Journal`
  (fsync'd); once the outage is noticed, events go straight there. The maintenance task
  replays the journal when PostgreSQL answers again (each event once: its event_id), and
  only then writes to PostgreSQL directly again. Start-up replays a previous run's.
- Running loops keep paging: devices and intervals come from the cached directory, the
  gate says "cannot tell" (page). Losing the lock connection with the database does not
  stop them: when PostgreSQL is back, each lock is taken again, and a loop whose lock
  another server took meanwhile stops (that server leads it now).
- A trigger raises a *provisional* alarm: a negative id, in memory only, keyed by its
  alarm key (a re-trigger joins it), paging at once from the cached directory, its events
  journalled. When PostgreSQL is back it is activated for real with the same key (or
  merged into the key's alarm another server raised meanwhile), a rekey line maps its
  journalled events to the row, and its loop goes on under the row's id, same schedule.
  Listeners (e-mail, SMS, emergency call) are told only then: they key on the row.
- Deactivation needs PostgreSQL (the PIN hash, the lockout count, the row): refused
  while it is down, so an alarm is never silenced without its record. The alarm pages on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import asyncpg

from fastagi.alarms.lamps import LampChange, Lamps
from fastagi.alarms.loop import AlarmLoop, Turn
from fastagi.alarms.outage import CachedLoopStore, DatabaseDown, Outage, is_unavailable
from fastagi.alarms.paging import Pager
from fastagi.config import AlarmSettings, JournalSettings
from fastagi.domain.alarm import ACTIVE, Alarm
from fastagi.domain.directory import Department, Directory, alarm_key, department_name
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.rules import announcement_text
from fastagi.store import Stores
from fastagi.store.journal import Journal, Rekey
from fastagi.tts import TextToSpeech, TtsError, fallback_announcement

logger = logging.getLogger(__name__)

# How long close() lets a page in progress finish before cancelling its loop.
_CLOSE_GRACE = 5.0
# The error of a page whose leader died during it (recorded by the next leader).
INTERRUPTED_PAGE = "leader lost during the page; outcome unknown"
_T = TypeVar("_T")


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
        store: Stores,
        pager: Pager,
        lamps: Lamps,
        tts: TextToSpeech | None,
        settings: AlarmSettings,
        *,
        instance_id: str,
        pool: asyncpg.Pool[asyncpg.Record],
        listeners: Sequence[AlarmListener] = (),
        journal: Journal | None = None,
        journal_settings: JournalSettings | None = None,
    ) -> None:
        """``pool`` is the store's pool: the service takes one connection of it for the
        leader locks, and short transactions for the gate before each page.

        ``journal``: where events wait while PostgreSQL is down (None: in memory only).
        """
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
        self._journal_settings = journal_settings or JournalSettings(directory=None)
        self._journal = journal or Journal(self._journal_settings)
        self._outage = Outage()
        self._timeout = self._journal_settings.write_timeout
        self._loop_store = CachedLoopStore(
            store, lambda: self._directory, self._outage, self._timeout
        )
        # Alarms raised while PostgreSQL was down, by provisional (negative) id.
        self._provisional: dict[int, Alarm] = {}
        # Random start: provisional ids of two runs never meet in one journal.
        self._provisional_ids = itertools.count(random.randint(1, 2**30))  # noqa: S311
        self._maintenance_lock = asyncio.Lock()
        self.last_recovery: float | None = None  # seconds from PG back to journal drained
        self._started = False
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for deactivations, set the lamps, and lead every alarm nobody leads."""
        self._started = True
        self._lamps.set_listener(self._record_lamps)
        self._stop_listening = await self._store.alarms.listen_changes(self._on_notify)
        await self.refresh_directory()
        await self._promote_leftovers()
        await self._journal.replay(self._store.history, live=frozenset(self._provisional))
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
        if not self._outage.down and self._journal.pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._replay(), self._timeout)
        await self._journal.close()
        self._lamps.set_listener(None)
        await self._locks.close()

    # -- queries -------------------------------------------------------------------------

    async def refresh_directory(self) -> Directory:
        self._directory = await self._store.directory.load_directory()
        self._directory_at = asyncio.get_running_loop().time()
        return self._directory

    async def directory(self) -> Directory:
        """Departments and mappings, cached; reloaded every ``directory_refresh`` s."""
        age = asyncio.get_running_loop().time() - self._directory_at
        stale = age > self._settings.directory_refresh
        if self._directory is None or (stale and not self._outage.down):
            try:
                return await self._db("directory", self.refresh_directory)
            except Exception:
                if self._directory is None:
                    raise
        # While PostgreSQL is down the maintenance task reloads it once it is back.
        return self._directory

    async def lookup(self, extension: str) -> Department | None:
        return (await self.directory()).department_for(extension)

    async def active_alarms(self) -> list[Alarm]:
        return await self._store.alarms.active_alarms()

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
        key = alarm_key(department, extension)
        try:
            alarm, created = await self._db(
                "activate",
                lambda: self._store.alarms.activate(
                    key, department.id if department else None, name, extension, events
                ),
            )
        except Exception:
            return await self._activate_offline(key, extension, department, details)
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
        longer active. Raises DatabaseDown (or what asyncpg raises) while PostgreSQL is
        unavailable: no deactivation without its PIN check and its record.
        """
        if self._outage.down:
            raise DatabaseDown("deactivate")
        alarm_loop = self._loops.get(alarm_id)
        hold = alarm_loop.hold() if alarm_loop else contextlib.nullcontext()
        async with hold:
            alarm = await self._store.alarms.get_alarm(alarm_id)
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
            done = await self._store.alarms.deactivate(alarm_id, by, reason, event)
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
        """Append a history event; journalled when PostgreSQL does not take it. Never
        raises: a flow or a loop goes on whatever happens to the history."""
        if event.alarm_id is None or event.alarm_id > 0:
            try:
                await self._db(
                    f"record {event.kind}", lambda: self._store.history.append_event(event)
                )
            except Exception as exc:
                logger.debug("%s event journalled: %r", event.kind, exc)
            else:
                return
        await self._journal.append(event)

    async def _db(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """A PostgreSQL call with a deadline; not even tried while it is known to be down
        (the maintenance task finds out when it is back)."""
        if self._outage.down:
            raise DatabaseDown(what)
        try:
            return await asyncio.wait_for(call(), self._timeout)
        except Exception as exc:
            self._outage.failed(what, exc)
            raise

    async def _activate_offline(
        self, key: str, extension: str, department: Department | None, details: dict[str, str]
    ) -> Activation:
        """PostgreSQL did not answer: raise (or re-trigger) the alarm without it."""
        name = department_name(department)
        running = next((lp.alarm for lp in self._loops.values() if lp.alarm.alarm_key == key), None)
        if running is not None:
            await self.record(
                HistoryEvent(EventKind.RETRIGGERED, running.id, extension, name, details)
            )
            return Activation(running, created=False)
        alarm = Alarm(
            id=-next(self._provisional_ids),
            alarm_key=key,
            department_id=department.id if department else None,
            department_name=name,
            extension=extension,
            state=ACTIVE,
            activated_at=datetime.now(UTC),
            deactivated_at=None,
            deactivated_by=None,
            deactivation_reason=None,
            cycles=0,
            last_cycle_at=None,
        )
        logger.error(
            "alarm %s raised without PostgreSQL (provisional id %s); paging from the cache",
            key,
            alarm.id,
        )
        self._provisional[alarm.id] = alarm
        # What a start-up needs to raise it for real if this process dies before PG returns.
        offline = {
            **details,
            "alarm_key": key,
            "department_id": alarm.department_id,
            "offline": True,
        }
        await self.record(HistoryEvent(EventKind.ACTIVATED, alarm.id, extension, name, offline))
        self._start_loop(alarm, first_delay=0.0)
        await self._update_lamps(causes=[alarm])
        return Activation(alarm, created=True)

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
        if not await self._store.alarms.is_active(alarm.id):
            await self._locks.release(alarm.id)
            return False
        fresh = await self._store.alarms.get_alarm(alarm.id) or alarm
        if first_delay is None:
            await self._record_interrupted_page(fresh)
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
        self._start_loop(fresh, first_delay=first_delay)
        return True

    def _start_loop(self, alarm: Alarm, *, first_delay: float) -> AlarmLoop:
        alarm_loop = AlarmLoop(
            alarm,
            store=self._loop_store,
            pager=self._pager,
            settings=self._settings,
            tts=self._tts,
            gate=self._gate,
            record=self.record,
            first_delay=first_delay,
        )
        self._loops[alarm.id] = alarm_loop
        alarm_loop.start()
        return alarm_loop

    async def _record_interrupted_page(self, alarm: Alarm) -> None:
        """The previous leader counted a cycle (at its start) whose event it never wrote:
        it died during that page. Record the page, its outcome unknown, so the history has
        every page the phones received, each once.

        Only the last counted cycle is looked at: a dead leader's earlier events, if any,
        wait in its own journal and arrive when it runs again.
        """
        recorded = await self._store.history.last_recorded_cycle(alarm.id)
        if alarm.cycles <= recorded:
            return
        logger.warning(
            "alarm %s: cycle %s was paged by a leader that died during it; outcome unknown",
            alarm.id,
            alarm.cycles,
        )
        details: dict[str, object] = {
            "cycle": alarm.cycles,
            "dialled": None,
            "answered": None,
            "duration": None,
            "error": INTERRUPTED_PAGE,
            "channel_id": None,
            "cancelled": False,
            "instance": self.instance_id,
        }
        if alarm.last_cycle_at is not None:
            details["started_at"] = alarm.last_cycle_at.isoformat()
        await self.record(
            HistoryEvent(
                EventKind.PAGE_CYCLE, alarm.id, alarm.extension, alarm.department_name, details
            )
        )

    async def _resume_delay(self, alarm: Alarm) -> float:
        """Continue the previous leader's schedule: one interval after its last page
        began (``last_cycle_at``: cycles are counted when they start), start to start."""
        if alarm.last_cycle_at is None:
            return 0.0
        interval = await self._store.directory.interval_seconds(alarm)
        since = (datetime.now(UTC) - alarm.last_cycle_at).total_seconds()
        return max(0.0, interval - since)

    async def _stop_loop(self, alarm_id: int, *, release: bool = True) -> None:
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
        if release:
            await self._locks.release(alarm_id)

    @contextlib.asynccontextmanager
    async def _gate(self, alarm_id: int) -> AsyncIterator[Turn]:
        # ---- SQL of this module's own (not in Stores, which has no API for it) ----
        # Locks the alarm row (FOR NO KEY UPDATE: the lock its UPDATE takes anyway) in a
        # transaction that lasts until the page's Originate is written and the cycle is
        # counted: a concurrent deactivation (UPDATE ... WHERE state = 'active') waits for
        # it, so it is acknowledged only after that page started, and a deactivation that
        # committed first is seen here. Turn(None): PostgreSQL cannot say.
        if alarm_id < 0 or self._outage.down:
            yield Turn(None)  # a provisional alarm, or PostgreSQL down: page
            return
        try:
            connection = await self._pool.acquire(timeout=5.0)
        except Exception as exc:
            logger.warning("active check of alarm %s impossible: %s", alarm_id, exc)
            yield Turn(None)
            return
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
                row = await connection.fetchrow(
                    "SELECT state, cycles FROM alarms WHERE id = $1 FOR NO KEY UPDATE",
                    alarm_id,
                    timeout=self._timeout,
                )
            except Exception as exc:
                logger.warning("active check of alarm %s failed: %s", alarm_id, exc)
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                yield Turn(None)
                return

            async def count(cycle: int) -> bool:
                try:
                    async with asyncio.timeout(self._timeout):
                        await connection.execute(
                            """
                            UPDATE alarms SET cycles = greatest(cycles, $2),
                                last_cycle_at = greatest(last_cycle_at, clock_timestamp())
                            WHERE id = $1
                            """,
                            alarm_id,
                            cycle,
                        )
                        await transaction.commit()
                except Exception as exc:
                    # Counted with the cycle's event, when it ends (or is replayed).
                    logger.warning(
                        "cycle %s of alarm %s not counted at its start: %r", cycle, alarm_id, exc
                    )
                    return False
                return True

            try:
                if row is None or row["state"] != ACTIVE:
                    yield Turn(False)
                else:
                    yield Turn(True, row["cycles"], count)
            finally:
                # Nothing to undo after a commit (rollback() then just raises).
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
        if alarm_loop is None or await self._store.alarms.is_active(alarm_id):
            return
        alarm_loop.stop()
        await self._stop_loop(alarm_id)
        await self._update_lamps(causes=[alarm_loop.alarm])
        await self._tell_listeners_ended(alarm_id)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._settings.takeover_interval)
            await self.maintain()

    async def maintain(self) -> None:
        """One round of maintenance (the background task runs one per takeover_interval):
        after an outage, the directory, the provisional alarms and the journal first;
        then the takeover scan."""
        async with self._maintenance_lock:
            loop = asyncio.get_running_loop()
            try:
                if self._outage.down or self._journal.pending or self._provisional:
                    await self._recover()
                if loop.time() - self._directory_at > self._settings.directory_refresh:
                    await self.refresh_directory()
                await self._scan()
            except Exception as exc:
                if self._outage.down:
                    return  # logged when it began
                if is_unavailable(exc):
                    self._outage.failed("maintenance", exc)
                    return
                logger.exception("alarm service maintenance failed; trying again")

    async def _recover(self) -> None:
        """PostgreSQL may be back: reload the directory, give provisional alarms their
        rows, replay the journal; only then do events go to PostgreSQL directly again."""
        was_down = self._outage.down
        await asyncio.wait_for(self._store.policy.load_settings(), self._timeout)  # answering?
        back = time.monotonic()
        if was_down:
            await self.refresh_directory()
        for alarm_id in list(self._provisional):
            await self._promote(alarm_id)
        await self._replay()
        self._outage.recovered()
        if was_down:
            self.last_recovery = time.monotonic() - back

    async def _replay(self) -> None:
        started = asyncio.get_running_loop().time()
        result = await self._journal.replay(self._store.history, live=frozenset(self._provisional))
        if result.replayed:
            logger.warning(
                "replayed %s journalled events (%s new) in %.2f s",
                result.replayed,
                result.written,
                asyncio.get_running_loop().time() - started,
            )

    async def _promote(self, provisional: int) -> None:
        """Give a provisional alarm its row (or merge it into the key's active alarm), then
        let its loop go on under the row's id."""
        alarm = self._provisional[provisional]
        row, created = await self._store.alarms.activate(
            alarm.alarm_key, alarm.department_id, alarm.department_name, alarm.extension
        )
        await self._journal.append_rekey(Rekey(provisional, row.id, merged=not created))
        del self._provisional[provisional]
        logger.warning(
            "provisional alarm %s is alarm %s now%s",
            provisional,
            row.id,
            "" if created else " (raised meanwhile by another server: merged)",
        )
        alarm_loop = self._loops.pop(provisional, None)
        if alarm_loop is None:
            return
        leads = row.id not in self._loops and await self._locks.acquire(row.id)
        if leads:
            alarm_loop.rekey(row)
            self._loops[row.id] = alarm_loop
        else:
            # Another server leads the row already (or this one does, under its own id).
            alarm_loop.stop()
            if not await alarm_loop.wait(self._settings.max_page_seconds + 5):
                await alarm_loop.cancel()
        if created:
            self._tell_listeners("alarm_started", row)
        await self._update_lamps(causes=[row])

    async def _promote_leftovers(self) -> None:
        """Raise for real the alarms a previous run raised without PostgreSQL and could not
        promote before it ended (their ``activated`` event is in the journal, unmapped)."""
        for event in await self._journal.events():
            if (
                event.kind is not EventKind.ACTIVATED
                or event.alarm_id is None
                or event.alarm_id > 0
                or self._journal.mapped(event.alarm_id)
                or not isinstance(event.details.get("alarm_key"), str)
            ):
                continue
            department_id = event.details.get("department_id")
            row, created = await self._store.alarms.activate(
                event.details["alarm_key"],
                department_id if isinstance(department_id, int) else None,
                event.department or "",
                event.extension or "",
            )
            await self._journal.append_rekey(Rekey(event.alarm_id, row.id, merged=not created))
            logger.warning(
                "alarm %s, raised without PostgreSQL by a previous run, is alarm %s now",
                event.alarm_id,
                row.id,
            )
            if created:
                self._tell_listeners("alarm_started", row)

    async def _scan(self) -> None:
        """Lead unled active alarms; stop loops of alarms that ended or were lost."""
        if not await self._locks.healthy():
            # The lock connection died, and with it every lock: another server may lead
            # our alarms by now. Take each lock again at once: a loop whose lock another
            # server holds stops; while PostgreSQL is down (the acquire fails) the loops
            # go on unlocked, since nobody can take over from a database that is down.
            for alarm_id in [a for a in self._loops if a > 0]:
                if not await self._locks.acquire(alarm_id):
                    logger.warning("alarm %s is led by another server now", alarm_id)
                    self._loops[alarm_id].stop()
                    await self._stop_loop(alarm_id, release=False)
        active = await self._store.alarms.active_alarms()
        active_ids = {alarm.id for alarm in active}
        for alarm_id in [a for a in self._loops if a > 0 and not self._locks.holds(a)]:
            # Paged unlocked through an outage: lead it still only if nobody else does.
            if alarm_id in active_ids and not await self._locks.acquire(alarm_id):
                logger.warning("alarm %s is led by another server now", alarm_id)
                self._loops[alarm_id].stop()
                await self._stop_loop(alarm_id, release=False)
        # Alarms deactivated elsewhere (or here, a moment ago): their lamps go out now.
        ended = [lp.alarm for a, lp in self._loops.items() if a > 0 and a not in active_ids]
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
            if active is not None:
                alarms = list(active)
            else:
                try:
                    alarms = await self._db("active alarms", self._store.alarms.active_alarms)
                except Exception:
                    # PostgreSQL down: the alarms this server pages are what it knows.
                    alarms = [lp.alarm for lp in self._loops.values() if not lp.stopping]
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
            await self._store.directory.paging_devices(alarm)
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

    def _tell_listeners(self, method: str, alarm: Alarm) -> None:
        if method == "alarm_ended":
            if alarm.id in self._ended:
                return  # told already (a local deactivation also arrives as a NOTIFY)
            self._ended.add(alarm.id)
        for listener in self._listeners:
            self._spawn(self._call_listener(listener, method, alarm))

    async def _tell_listeners_ended(self, alarm_id: int) -> None:
        alarm = await self._store.alarms.get_alarm(alarm_id)
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

    ---- SQL of this module's own: Stores has no API for leader locks. ----
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

    def holds(self, alarm_id: int) -> bool:
        return alarm_id in self._held

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
