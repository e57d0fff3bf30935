"""The alarm service: activates, deactivates, and runs the paging loops this server leads.

Theory of operation. Alarm state lives in PostgreSQL (fastagi/store/alarms.py). Several
servers may share one database (FreePBX with ``hagi://`` fail-over); each active alarm is
paged by exactly one of them, its leader (fastagi/alarms/leadership.py). Every
``takeover_interval`` seconds each server's scan leads the active alarms nobody leads (a
leader died) and stops the loops of alarms that ended.

A deactivation is written by whoever receives it (a call flow here, the CLI, another
server); the store's ``NOTIFY fastagi_alarms`` reaches every server, and the leader
stops the loop and hangs up the page in progress. A deactivation from a call is finished
by the server that took the call (lamps, listeners, the all-clear); one from the CLI by
the alarm's leader, on the NOTIFY: the same steps either way. The scan doubles as a
safety net for a lost notification.

Administrative changes (fastagi/admin) send ``NOTIFY fastagi_config``: the directory is
reloaded at once, a burst of changes coalesced into one reload after the one under way.
The periodic reload (``directory_refresh``) stays as a safety net. The listening
connection is re-armed when it is lost (fastagi/store/changes.py); notifications sent
meanwhile are lost, so a scan and a reload follow the re-arming.

PostgreSQL down (see docs/reliability.md). Nothing that pages waits for it: history goes
to the journal (fastagi/alarms/recorder.py), running loops page from the cached directory
(fastagi/alarms/outage.py), a trigger raises a provisional alarm
(fastagi/alarms/provisional.py) whose loop goes on under its row's id once PostgreSQL is
back. Losing the lock connection does not stop the loops: when PostgreSQL is back each
lock is taken again, and a loop whose lock another server took meanwhile stops.
Deactivation needs PostgreSQL (the PIN hash, the lockout count, the row): refused while
it is down, so an alarm is never silenced without its record. The alarm pages on.

Drills (fastagi/domain/drill.py) are alarms flagged as such, led, gated, paged and
deactivated as any other. A drill started here (from a phone, or the schedule) is led at
once; one the CLI started arrives as ``NOTIFY fastagi_alarms`` ``+<id>`` (else the scan
finds it). Its loop ends it after its cycles (:meth:`_complete_drill`: the listeners
settle first, the emergency call of a drill that has one; then ``deactivated`` by
"drill"). A real alarm makes the drills of its department yield (:meth:`_yield_drills`)
before its own first page: deactivated, their page hung up, so the phones are free for
it. The server that ran a drill's loop records its ``drill_report`` once the loop ended
(every page recorded), under an id of its own: once, whoever else tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg

from fastagi.alarms.all_clear import page_all_clear
from fastagi.alarms.drill_report import record_drill_report
from fastagi.alarms.lamps import Lamps
from fastagi.alarms.language import language_for
from fastagi.alarms.leadership import Leadership
from fastagi.alarms.listeners import AlarmListener, Listeners
from fastagi.alarms.locations import RecordedLocations
from fastagi.alarms.loop import AlarmLoop
from fastagi.alarms.outage import CachedLoopStore, DatabaseDown, is_unavailable
from fastagi.alarms.paging import Pager
from fastagi.alarms.provisional import ProvisionalAlarms
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.config import AlarmSettings, DrillSettings
from fastagi.config.catalogues import load_languages
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import Department, Directory, alarm_key, department_name
from fastagi.domain.drill import COMPLETED_BY, YIELD_REASON, Drill, started_event
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Languages
from fastagi.domain.rules import error_backoff
from fastagi.store import AlarmChange, Stores
from fastagi.store.alarms import DrillStart, DrillStartOutcome
from fastagi.tts import TextToSpeech

logger = logging.getLogger(__name__)

# How long close() lets a page in progress finish before cancelling its loop.
_CLOSE_GRACE = 5.0
# How long a real alarm's first page waits for its department's drills to yield (their
# page hung up): milliseconds usually; a drill led by another server is hung up by it.
_DRILL_YIELD_WAIT = 1.0
# Retrying the deactivation of a drill that paged its cycles (PostgreSQL away).
_DRILL_END_RETRY = 2.0
_DRILL_END_RETRY_MAX = 30.0


@dataclass(frozen=True)
class Activation:
    alarm: Alarm
    created: bool  # False: a re-trigger of the key's active alarm


class AlarmService:
    def __init__(
        self,
        stores: Stores,
        pager: Pager,
        lamps: Lamps,
        tts: TextToSpeech | None,
        settings: AlarmSettings,
        *,
        recorder: HistoryRecorder,
        instance_id: str,
        pool: asyncpg.Pool[asyncpg.Record],
        listeners: Sequence[AlarmListener] = (),
        drill_settings: DrillSettings | None = None,
        locations: RecordedLocations | None = None,
        languages: Languages | None = None,
    ) -> None:
        """``pool`` is the stores' pool: leadership takes one connection of it for the
        leader and page locks, and one short UPDATE for the gate of each page.
        ``recorder``: the history recorder shared with everyone who acts on alarms.
        ``drill_settings``: what drills say, page and wait for (``[drill]``).
        ``languages``: the prompt catalogues pages speak (default: the built-in ones)."""
        self._stores = stores
        self._pager = pager
        self._lamps = lamps
        self._tts = tts
        self._settings = settings
        self._drill_settings = drill_settings or DrillSettings()
        self._locations = locations
        self._languages = languages or load_languages()
        self.instance_id = instance_id
        self._recorder = recorder
        self._outage = recorder.outage
        self._timeout = recorder.timeout
        self._listeners = Listeners(listeners)
        self._leadership = Leadership(
            pool,
            stores,
            recorder,
            self._outage,
            namespace=settings.lock_namespace,
            instance_id=instance_id,
            timeout=self._timeout,
        )
        self._locks = self._leadership.locks
        self._provisional = ProvisionalAlarms(stores.alarms, recorder)
        self._loops: dict[int, AlarmLoop] = {}
        self._leading: set[int] = set()  # alarms a _lead() is taking right now
        # Alarm keys an activate() is creating or re-triggering right now: the scan
        # leaves them to it (it would lead a brand-new alarm as a takeover, "resumed").
        self._activating: Counter[str] = Counter()
        self._directory: Directory | None = None
        self._directory_at = 0.0
        self._directory_loaded = asyncio.Condition()
        self._reload_wanted = asyncio.Event()
        self._reloader: asyncio.Task[None] | None = None
        self._changes = stores.changes.listener(
            on_alarm=self._on_alarm_change,
            on_config=self._on_config_change,
            on_page_request=self._on_page_request,
            on_rearmed=self._on_rearmed,
        )
        self._loop_store = CachedLoopStore(
            stores, lambda: self._directory, self._outage, self._timeout
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: asyncio.Task[None] | None = None
        self._maintenance_lock = asyncio.Lock()
        self.last_recovery: float | None = None  # seconds from PG back to journal drained
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for deactivations and changes, set the lamps, and lead every alarm
        nobody leads."""
        await self._changes.start()
        await self.refresh_directory()
        self._reloader = asyncio.create_task(self._reload_on_change(), name="directory-reload")
        for row in await self._provisional.promote_leftovers():
            self._listeners.started(row)
        await self._recorder.replay(live=self._provisional.ids)
        await self._scan()
        self._background = asyncio.create_task(self._maintain(), name="alarm-service")

    async def close(self) -> None:
        """Stop this server's loops without deactivating anything; free the alarms. The
        recorder is its owner's to close, after everyone who records has stopped."""
        if self._closed:
            return
        self._closed = True
        for task in (self._background, self._reloader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._changes.close()
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
        await self._listeners.close()
        await self._locks.close()

    # -- queries -------------------------------------------------------------------------

    async def refresh_directory(self) -> Directory:
        directory = await self._stores.directory.load_directory()
        async with self._directory_loaded:
            self._directory = directory
            self._directory_at = asyncio.get_running_loop().time()
            self._directory_loaded.notify_all()
        return directory

    async def wait_directory(self, live: Callable[[Directory], bool]) -> Directory:
        """Wait until the cached directory satisfies ``live`` (an edit is live here)."""
        async with self._directory_loaded:
            await self._directory_loaded.wait_for(
                lambda: self._directory is not None and live(self._directory)
            )
            assert self._directory is not None
            return self._directory

    @property
    def listening(self) -> asyncio.Event:
        """Set while this server listens for deactivations and changes."""
        return self._changes.armed

    async def directory(self) -> Directory:
        """Departments and mappings, cached; reloaded every ``directory_refresh`` s."""
        age = asyncio.get_running_loop().time() - self._directory_at
        stale = age > self._settings.directory_refresh
        if self._directory is None or (stale and not self._outage.down):
            try:
                return await self._outage.call("directory", self.refresh_directory, self._timeout)
            except Exception:
                if self._directory is None:
                    raise
        # While PostgreSQL is down the maintenance task reloads it once it is back.
        return self._directory

    async def lookup(self, extension: str) -> Department | None:
        return (await self.directory()).department_for(extension)

    async def active_alarms(self) -> list[Alarm]:
        return await self._stores.alarms.active_alarms()

    def leads(self, alarm_id: int) -> bool:
        """Whether this server runs the alarm's paging loop."""
        alarm_loop = self._loops.get(alarm_id)
        return alarm_loop is not None and not alarm_loop.stopping

    # -- commands ------------------------------------------------------------------------

    async def activate(
        self,
        extension: str,
        department: Department | None,
        *,
        uniqueid: str,
        event_id: UUID | None = None,
    ) -> Activation:
        """Create the alarm of ``department`` (or of ``extension`` when unknown), or
        re-trigger it when it is already active. A new alarm pages at once.

        ``event_id``: the id of the ``activated`` or ``retriggered`` event, for a caller
        that may activate the same trigger twice (fastagi/alarms/fallback.py): the second
        time joins the alarm and writes no second event (one id for both kinds, since only
        one of them is written). Honoured while PostgreSQL answers.
        """
        name = department_name(department)
        details = {"uniqueid": uniqueid, "instance": self.instance_id}
        activated = HistoryEvent(
            EventKind.ACTIVATED, None, extension, name, details, event_id=event_id or uuid4()
        )
        events = [activated, activated.with_kind(EventKind.RETRIGGERED)]
        key = alarm_key(department, extension)
        self._activating[key] += 1
        try:
            return await self._activate(key, extension, department, details, events)
        finally:
            self._activating[key] -= 1
            if not self._activating[key]:
                del self._activating[key]

    async def _activate(
        self,
        key: str,
        extension: str,
        department: Department | None,
        details: dict[str, str],
        events: list[HistoryEvent],
    ) -> Activation:
        name = department_name(department)
        try:
            alarm, created = await self._outage.call(
                "activate",
                lambda: self._stores.alarms.activate(
                    key, department.id if department else None, name, extension, events
                ),
                self._timeout,
            )
        except Exception:
            return await self._activate_offline(key, extension, department, details)
        if created:
            await self._yield_drills(alarm)
        if created or alarm.id not in self._loops:
            # A re-triggered alarm that nobody leads (its leader died a moment ago) is
            # taken now rather than at the next scan.
            await self._lead(alarm, first_delay=0.0 if created else None)
        if created or not self._lamps.lit_for(alarm):
            # A re-trigger changes no lamp: the read of the active alarms and the apply
            # only when this server does not know the alarm's lamps on (another server
            # lit them, or setting them failed). A panic-confirm storm re-triggers one
            # alarm per call.
            await self._update_lamps(causes=[alarm])
        if created:
            self._listeners.started(alarm)
            # In the background: activate() (which the panic call waits for) and the first
            # page never wait on it.
            self._spawn(self._keep_snapshot(alarm))
        return Activation(alarm, created)

    async def _keep_snapshot(self, alarm: Alarm) -> None:
        """The directory and policy as they are now, for a replay of the alarm; a failure
        costs the replay only."""
        try:
            await self._stores.snapshots.take(
                alarm.id, alarm.department_id, {"alarm": self._settings.replayed()}
            )
        except Exception as exc:
            logger.warning("cannot keep the snapshot of alarm %s: %s", alarm.id, exc)

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
        done = await self._deactivate_row(alarm_id, by=by, reason=reason, uniqueid=uniqueid)
        if done is None:
            return False
        await self._finish_deactivation(done)
        return True

    async def _deactivate_row(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> Alarm | None:
        """The deactivation itself: the row and its event, the loop told to stop (no
        page starts after this); None when the alarm was not active. The rest is
        :meth:`_finish_deactivation`'s."""
        alarm_loop = self._loops.get(alarm_id)
        hold = alarm_loop.hold() if alarm_loop else contextlib.nullcontext()
        async with hold:
            alarm = await self._stores.alarms.get_alarm(alarm_id)
            if alarm is None:
                return None
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
            done = await self._stores.alarms.deactivate(
                alarm_id, by, reason, event, finished_by=self.instance_id
            )
            if done is not None and alarm_loop is not None:
                alarm_loop.stop()
        return done

    async def start_drill(
        self,
        department: Department,
        *,
        requested_by: str,
        extension: str = "",
        cycles: int | None = None,
        devices: Sequence[str] | None = None,
        emergency: bool | None = None,
        uniqueid: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> DrillStart:
        """Start a drill of ``department`` and lead it: it pages at once. What is not
        given comes from ``[drill]``. Refused (see :class:`DrillStartOutcome`) while a
        real alarm of the department is active or a drill of it runs; for a scheduled
        slot another server started, nothing happens. Needs PostgreSQL (raises)."""
        settings = self._drill_settings
        drill = Drill(
            cycles=cycles or settings.cycles,
            devices=tuple(settings.devices if devices is None else devices),
            emergency=settings.emergency if emergency is None else emergency,
            requested_by=requested_by,
            scheduled_for=scheduled_for,
        )
        details: dict[str, object] = {"instance": self.instance_id}
        if uniqueid is not None:
            details["uniqueid"] = uniqueid
        event = started_event(department.name, extension, drill, details)
        started: DrillStart = await self._outage.call(
            "start drill",
            lambda: self._stores.alarms.start_drill(
                department.id, department.name, extension, drill, event
            ),
            self._timeout,
        )
        if started.outcome is DrillStartOutcome.STARTED and started.alarm is not None:
            await self._lead_new_drill(started.alarm)
        return started

    async def _lead_new_drill(self, alarm: Alarm) -> bool:
        """Lead a drill nobody paged yet (this server started it, the CLI did, or its
        first leader died before its first page): first page at once, listeners told."""
        if not await self._lead(alarm, first_delay=0.0):
            return False
        await self._update_lamps(causes=[alarm])
        self._listeners.started(alarm)
        return True

    async def _lead_started_drill(self, alarm_id: int) -> None:
        """The CLI started a drill (its NOTIFY): lead it now rather than at the scan."""
        alarm = await self._stores.alarms.get_alarm(alarm_id)
        if alarm is not None and alarm.is_active and alarm.drill is not None:
            await self._lead_new_drill(alarm)

    async def _yield_drills(self, alarm: Alarm) -> None:
        """A real alarm began: the drills of its department (of every department, for an
        alarm of none) stop at once, so its page finds the phones free and nobody takes
        it for the drill. Waits at most _DRILL_YIELD_WAIT: the real alarm's first page
        never waits long for a drill; the rest goes on in the background."""
        if alarm.drill is not None:
            return
        task = asyncio.ensure_future(self._stop_drills_for(alarm))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.wait({task}, timeout=_DRILL_YIELD_WAIT)

    async def _stop_drills_for(self, alarm: Alarm) -> None:
        try:
            drills = await self._outage.call(
                "drills to yield",
                lambda: self._stores.alarms.drills_to_yield(alarm.department_id),
                self._timeout,
            )
            if drills and self._outage.down:
                raise DatabaseDown("yield")
            for drill in drills:
                logger.warning(
                    "drill %s yields to alarm %s of %s", drill.id, alarm.id, alarm.department_name
                )
                done = await self._deactivate_row(
                    drill.id, by=f"alarm {alarm.id}", reason=YIELD_REASON
                )
                if done is None:
                    continue
                # Hung up now, whatever hangup_on_deactivate says: the real alarm needs
                # the phones. The rest (lamps, listeners, the report) need not wait.
                await self._pager.cancel(drill.id)
                self._spawn(self._finish_deactivation(done))
        except Exception:
            logger.exception("cannot stop the drills of alarm %s's department", alarm.id)

    def _drill_paged(self, alarm_loop: AlarmLoop) -> None:
        """A drill's loop paged its cycles: end the drill (from a task of its own)."""
        self._spawn(self._complete_drill(alarm_loop))

    async def _complete_drill(self, alarm_loop: AlarmLoop) -> None:
        """Let the listeners finish their part (the emergency call of a drill that has
        one; at most ``[drill] settle_timeout``), then deactivate the drill. While
        PostgreSQL is away, try again until it answers or the loop is stopped."""
        alarm = alarm_loop.alarm
        await self._listeners.drill_paged(alarm, self._drill_settings.settle_timeout)
        failures = 0
        while not alarm_loop.stopping and not self._closed:
            try:
                await self.deactivate(
                    alarm.id, by=COMPLETED_BY, reason=f"{alarm_loop.cycle} cycle(s) paged"
                )
                return
            except Exception as exc:
                failures += 1
                logger.warning("cannot end drill %s yet: %r", alarm.id, exc)
                await asyncio.sleep(error_backoff(failures, _DRILL_END_RETRY, _DRILL_END_RETRY_MAX))

    async def _report_drill(self, alarm_id: int) -> None:
        """Once this server's loop of the drill has ended: its report, recorded once."""
        await record_drill_report(
            self._stores, self._recorder, alarm_id, instance_id=self.instance_id
        )

    async def _finish_deactivation(self, done: Alarm) -> None:
        """What follows a deactivation, by whoever finishes it (the server that took the
        call; for the CLI's, the leader): the page in progress hung up and the loop
        stopped, the lamps, the listeners told, the all-clear (a drill: its report)."""
        stopped = await self._stop_loop(done.id)
        await self._update_lamps(causes=[done])
        self._listeners.ended(done)
        if done.drill is not None:
            if stopped:
                self._spawn(self._report_drill(done.id))
            return  # no all-clear: nothing was wrong
        if self._settings.all_clear:
            self._spawn(
                page_all_clear(
                    done,
                    pager=self._pager,
                    tts=self._tts,
                    directory=self._stores.directory,
                    settings=self._settings,
                    recorder=self._recorder,
                    speech=language_for(
                        done.department_id, self._directory, self._languages, self._settings
                    ),
                )
            )

    async def _activate_offline(
        self, key: str, extension: str, department: Department | None, details: dict[str, str]
    ) -> Activation:
        """PostgreSQL did not answer: raise (or re-trigger) the alarm without it."""
        running = next((lp.alarm for lp in self._loops.values() if lp.alarm.alarm_key == key), None)
        if running is not None:
            await self._recorder.record(
                HistoryEvent(
                    EventKind.RETRIGGERED,
                    running.id,
                    extension,
                    department_name(department),
                    details,
                )
            )
            return Activation(running, created=False)
        alarm = await self._provisional.raise_alarm(key, extension, department, details)
        self._start_loop(alarm, first_delay=0.0)
        await self._update_lamps(causes=[alarm])
        return Activation(alarm, created=True)

    # -- leading -------------------------------------------------------------------------

    async def _lead(self, alarm: Alarm, *, first_delay: float | None) -> bool:
        """Take the alarm's leader lock and start its loop; False if another leads it.

        ``first_delay`` None: continue the schedule of the previous leader.
        """
        if self._closed or alarm.id in self._loops or alarm.id in self._leading:
            return False
        # Taken here, before the first await: two paths leading one alarm at once (an
        # activation and the scan, a drill's NOTIFY and the scan) would both get the
        # lock, this session's own, and run two loops.
        self._leading.add(alarm.id)
        try:
            if not await self._locks.acquire(alarm.id):
                return False
            # The lock may have been free because the alarm just ended: check under it.
            if not await self._stores.alarms.is_active(alarm.id):
                await self._locks.release(alarm.id)
                return False
            fresh = await self._stores.alarms.get_alarm(alarm.id) or alarm
            if first_delay is None:
                first_delay = await self._leadership.resume(fresh)
            self._start_loop(fresh, first_delay=first_delay)
            return True
        finally:
            self._leading.discard(alarm.id)

    def _start_loop(self, alarm: Alarm, *, first_delay: float) -> AlarmLoop:
        alarm_loop = AlarmLoop(
            alarm,
            store=self._loop_store,
            pager=self._pager,
            settings=self._settings,
            tts=self._tts,
            gate=self._leadership.gate,
            record=self._recorder.record,
            first_delay=first_delay,
            drill_settings=self._drill_settings,
            on_drill_paged=self._drill_paged,
            locations=self._locations,
            speech=language_for(
                alarm.department_id,
                self._directory,
                self._languages,
                self._settings,
                self._drill_settings,
            ),
        )
        self._loops[alarm.id] = alarm_loop
        alarm_loop.start()
        return alarm_loop

    async def _stop_loop(self, alarm_id: int, *, release: bool = True) -> bool:
        """Stop the alarm's loop here and hang up its page; False when there was none."""
        alarm_loop = self._loops.get(alarm_id)
        if alarm_loop is None:
            return False
        alarm_loop.stop()
        if self._settings.hangup_on_deactivate:
            await self._pager.cancel(alarm_id)
        # Without hangup the announcement in progress finishes; the loop ends after it.
        if not await alarm_loop.wait(self._settings.max_page_seconds + 5):
            await alarm_loop.cancel()
        self._loops.pop(alarm_id, None)
        self._loop_store.forget(alarm_id)
        if release:
            await self._locks.release(alarm_id)
        return True

    # -- notifications and maintenance ---------------------------------------------------

    def _on_alarm_change(self, change: AlarmChange) -> None:
        if change.started:
            # A drill the CLI started: whoever takes its lock first leads it.
            if change.alarm_id not in self._loops and not self._closed:
                self._spawn(self._lead_started_drill(change.alarm_id))
            return
        # A deactivation somewhere (this server included, then the loop is gone already).
        if change.alarm_id in self._loops:
            self._spawn(self._check_stopped(change))

    async def _check_stopped(self, change: AlarmChange) -> None:
        alarm_loop = self._loops.get(change.alarm_id)
        if alarm_loop is None:
            return
        done = await self._stores.alarms.get_alarm(change.alarm_id)
        if done is None or done.is_active:
            return
        alarm_loop.stop()
        if change.finished_by is None:
            # From the CLI: nobody else finishes it; this server leads it.
            await self._finish_deactivation(done)
            return
        # The server that took the call finishes it; the leader stops paging.
        if await self._stop_loop(change.alarm_id) and done.drill is not None:
            self._spawn(self._report_drill(done.id))
        await self._update_lamps(causes=[done])

    def _on_page_request(self, alarm_id: int) -> None:
        # Someone asked for the announcement now (fastagi/admin/alarms.py request_page):
        # only the leader pages; its gate refuses a deactivated alarm as before any page.
        alarm_loop = self._loops.get(alarm_id)
        if alarm_loop is not None and not alarm_loop.stopping:
            alarm_loop.page_now()

    def _on_config_change(self, action: str) -> None:
        logger.debug("configuration changed (%s): reloading the directory", action)
        self._reload_wanted.set()

    def _on_rearmed(self) -> None:
        # Notifications sent while nobody listened are lost: do what they would have.
        self._reload_wanted.set()
        self._spawn(self.maintain())

    async def _reload_on_change(self) -> None:
        """Reload the directory after each change; changes that arrive during a reload
        make one more reload, not one each."""
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            try:
                # Not through the outage: after a re-arming PostgreSQL answers again
                # before the maintenance has marked it so.
                await asyncio.wait_for(self.refresh_directory(), self._timeout)
            except Exception as exc:
                # Down: the maintenance reloads it once PostgreSQL is back.
                logger.warning("cannot reload the directory after a change: %r", exc)

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
                journal = self._recorder.journal
                await self._changes.check()
                if self._outage.down or journal.pending or self._provisional.ids:
                    await self._recover()
                if loop.time() - self._directory_at > self._settings.directory_refresh:
                    await self.refresh_directory()
                await self._scan()
            except Exception as exc:
                if self._outage.down or is_unavailable(exc):
                    # Down already: logged once a minute. Else the probe decides: a busy
                    # pool times out too, and is no outage.
                    self._outage.suspect("maintenance", exc, self._timeout)
                    return
                logger.exception("alarm service maintenance failed; trying again")

    async def _recover(self) -> None:
        """PostgreSQL may be back: reload the directory, give provisional alarms their
        rows, replay the journal; only then do events go to PostgreSQL directly again."""
        was_down = self._outage.down
        await asyncio.wait_for(self._stores.policy.load_settings(), self._timeout)  # answering?
        back = time.monotonic()
        if was_down:
            await self.refresh_directory()
        for provisional in self._provisional.ids:
            await self._promote(provisional)
        await self._recorder.replay(live=self._provisional.ids)
        self._outage.recovered()
        if was_down:
            self.last_recovery = time.monotonic() - back

    async def _promote(self, provisional: int) -> None:
        """Give a provisional alarm its row, then let its loop go on under the row's id."""
        row, created = await self._provisional.promote(provisional)
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
            self._listeners.started(row)
        await self._update_lamps(causes=[row])

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
        # The read judges only the loops that ran before it began: an alarm activated
        # meanwhile (its answer can reach this task after the activation has led it) is
        # missing from the read, not ended; stopping its loop hung up its first page.
        judged = set(self._loops)
        active = await self._stores.alarms.active_alarms()
        active_ids = {alarm.id for alarm in active}
        for alarm_id in [a for a in self._loops if a > 0 and not self._locks.holds(a)]:
            # Paged unlocked through an outage: lead it still only if nobody else does.
            if alarm_id in active_ids and not await self._locks.acquire(alarm_id):
                logger.warning("alarm %s is led by another server now", alarm_id)
                self._loops[alarm_id].stop()
                await self._stop_loop(alarm_id, release=False)
        # Alarms deactivated elsewhere (or here, a moment ago): their lamps go out now.
        ended = [
            lp.alarm
            for a, lp in self._loops.items()
            if a > 0 and a in judged and a not in active_ids
        ]
        for alarm in ended:
            await self._stop_loop(alarm.id)
            await self._tell_ended(alarm.id)
            if alarm.drill is not None:
                self._spawn(self._report_drill(alarm.id))
        for alarm_loop in [lp for lp in self._loops.values() if lp.done]:
            # A loop that ended on its own (its gate saw the alarm inactive).
            ended.append(alarm_loop.alarm)
            self._loops.pop(alarm_loop.alarm.id, None)
            await self._locks.release(alarm_loop.alarm.id)
        for alarm in active:
            if alarm.id not in self._loops and alarm.alarm_key not in self._activating:
                if alarm.drill is not None and alarm.cycles == 0:
                    await self._lead_new_drill(alarm)  # nobody paged it yet
                else:
                    await self._lead(alarm, first_delay=None)
        # Read afresh under the lamps' lock: an alarm may have started since the read above.
        await self._update_lamps(causes=ended)

    async def _update_lamps(self, *, causes: Sequence[Alarm] = ()) -> None:
        """Set the lamps for the active alarms, as PostgreSQL says (or as this server's
        loops say while it is down), read under the lamps' lock (:meth:`Lamps.update`).
        ``causes``: see :meth:`Lamps.update`."""
        try:
            known = [d.id for d in self._directory.departments] if self._directory else []
            await self._lamps.update(self._active_for_lamps, known, causes=causes)
        except Exception:
            logger.exception("cannot update the lamps")

    async def _active_for_lamps(self) -> list[Alarm]:
        try:
            return await self._outage.call(
                "active alarms", self._stores.alarms.active_alarms, self._timeout
            )
        except Exception:
            # PostgreSQL down: the alarms this server pages are what it knows.
            return [lp.alarm for lp in self._loops.values() if not lp.stopping]

    async def _tell_ended(self, alarm_id: int) -> None:
        alarm = await self._stores.alarms.get_alarm(alarm_id)
        if alarm is not None and not alarm.is_active:
            self._listeners.ended(alarm)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coroutine
            except Exception:
                logger.exception("alarm service task failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
