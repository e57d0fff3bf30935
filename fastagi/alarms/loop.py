"""The paging loop of one alarm.

Theory of operation. The first page goes out right after activation (or, for an alarm
taken over from another server, one interval after that server's last page began). Then a
page every interval, start to start, never two at once (``model.next_cycle_start``); the
interval is read from PostgreSQL after each page, before its wait, so a change applies from
the next cycle, and the cycle's ``page_cycle`` event records the interval it read.

No page may start once a deactivation is acknowledged. Right before each Originate the
loop, in this order:

1. takes its ``hold`` lock, which :meth:`AlarmService.deactivate` holds while it writes the
   deactivation, and checks its own stop flag;
2. opens the service's *gate*: it takes the alarm's page lock, which a deactivation takes
   before it changes the row (fastagi/store/leadership.py), so a deactivation committed
   elsewhere (CLI, another server) either came first, and the gate says "inactive", or
   waits for the gate to close, which happens only once the page's devices were
   dialled, i.e. the page reached the phones before the acknowledgement (and the leader
   hangs it up when it hears of it);
3. starts the page and waits until its Originate is sent (the schedule counts from
   then), then until Asterisk reports every device dialled (``DialBegin``, published
   after the INVITE left: fastagi/alarms/paging.py), for at most
   ``dial_confirm_timeout`` seconds, so a device that cannot be dialled never holds a
   deactivation long; counts the cycle on the alarm row (``cycles``, ``last_cycle_at``:
   the page's start); then releases both.

Holding the lock only until the Originate was written is not enough: Page() dials its
devices a few milliseconds to tens of milliseconds later (more on a loaded host), so a
deactivation committed in between was acknowledged before INVITEs that then rang.

A cycle is counted when it starts, not when it ends: a leader that dies during a page
(SIGKILL, power loss) leaves it counted, so the next leader neither pages again one page
length later nor reuses its number; it records that page as ``page_cycle`` with its
outcome unknown, and keeps the schedule, one interval after that page began. While
PostgreSQL cannot say (the gate yields ``active`` None), nothing is counted at the start:
the cycle's event, journalled, counts it when it reaches PostgreSQL (the store's counts
only grow to the event's cycle number, so a cycle is never counted twice).

A stop wakes the loop at once, whatever it waits for; so does a request to page now
(``page_now``: the web console's "re-send"), which only moves the next cycle forward, and,
after a page that was never sent because there was no AMI connection, the connection's
return: nobody heard that page, so the next goes out then, not an interval later.
Every cycle is recorded as a ``page_cycle`` event when it ends; an exception is recorded
as an ``error`` event and the loop goes on after a backoff: an alarm never stops paging
because something failed, only when it is deactivated. What is said: the alarm's TTS
announcement, from pieces rendered ahead of time (fastagi/tts/announcement.py), so a
first page waits for no render; when TTS fails, Asterisk's built-in sounds
(``fallback_announcement``), so an alarm is never silent.

A drill (fastagi/domain/drill.py) is the same loop with its own announcement and caller
name (``[drill]``), its test devices when it has them, and an end: once it has paged its
cycles it pages no more, tells the service (``on_drill_paged``), which deactivates it, and
waits to be stopped. A cycle beyond the drill's count (a journal replayed meanwhile
counted one) is not paged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastagi.alarms.locations import RecordedLocations
from fastagi.alarms.paging import CycleResult, Pager
from fastagi.config import AlarmSettings, DrillSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.language import Speech
from fastagi.domain.rules import (
    SpokenCharacters,
    announcement_segments,
    error_backoff,
    next_cycle_start,
    wait_before,
)
from fastagi.tts import TextToSpeech, TtsError, fallback_announcement, fallback_drill_announcement
from fastagi.tts.announcement import render_segments

logger = logging.getLogger(__name__)

# Longest pause between attempts after errors in a row.
_MAX_BACKOFF = 30.0
# After a page that was never sent (no AMI connection), the shortest wait before the
# next, however soon AMI is back: a connection that flaps must not make the loop spin.
_UNSENT_RETRY_PAUSE = 0.2
# The interval to use when PostgreSQL cannot say (the schema's default).
_DEFAULT_INTERVAL = 60


class LoopStore(Protocol):
    """What a loop reads and writes (the service gives it a cached view of the stores)."""

    async def interval_seconds(self, alarm: Alarm) -> int: ...
    async def paging_devices(self, alarm: Alarm) -> tuple[str, ...]: ...
    async def record_cycle(self, alarm_id: int, event: HistoryEvent) -> None: ...


async def _not_counted(cycle: int, started_at: datetime) -> bool:
    return False


@dataclass(frozen=True)
class Turn:
    """What the gate says before one page, while it holds the alarm row."""

    # True: active, page now; False: deactivated, stop; None: PostgreSQL cannot say,
    # page anyway (an alarm is never silenced by a failure).
    active: bool | None
    # The alarm row's count of cycles, read under the gate's lock (0 when unknown).
    cycles: int = 0
    # count(cycle, started_at): once the page's devices were dialled, count it on the row
    # and commit; False when that failed (the cycle's event counts it later). Never raises.
    count: Callable[[int, datetime], Awaitable[bool]] = _not_counted


# gate(alarm_id): a context that yields the Turn of the next page.
Gate = Callable[[int], AbstractAsyncContextManager[Turn]]
Recorder = Callable[[HistoryEvent], Awaitable[None]]


async def _first(
    page: asyncio.Task[CycleResult], event: asyncio.Event, limit: float | None = None
) -> None:
    """Wait until ``event`` is set, the page ended, or ``limit`` seconds passed."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({page, waiter}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _recorded_location(locations: RecordedLocations | None, alarm: Alarm) -> dict[str, Any]:
    """AnnouncementPrompts' recording and prefix for ``alarm`` (none without ``locations``)."""
    if locations is None:
        return {}
    prefix = locations.prefix.format(department=alarm.department_name, extension=alarm.extension)
    return {"recording": functools.partial(locations.for_alarm, alarm), "prefix": prefix}


class AnnouncementPrompts:
    """What a page of this alarm says: its pieces, looked up once (rendered then only if
    they were not ahead of time); built-in sounds when TTS fails."""

    def __init__(
        self,
        tts: TextToSpeech | None,
        segments: Sequence[str | SpokenCharacters],
        fallback: Sequence[str],
        *,
        voice: str | None = None,
        digits: Sequence[str] | None = None,
        recording: Callable[[], Awaitable[str | None]] | None = None,
        prefix: str = "",
    ) -> None:
        """``voice`` and ``digits``: a language's (fastagi/alarms/language.py), whose
        pieces are rendered with its voice and its extension spoken from clips of its
        digit words; None: the site's voice, the extension from the per-digit clips
        (fastagi/tts/announcement.py). ``recording()``: the caller's recorded location
        to page instead of the ``segments`` (fastagi/alarms/locations.py), after
        ``prefix`` spoken; None: the segments."""
        self._tts = tts
        self._segments = list(segments)
        self._voice = voice
        self._digits = digits
        self._fallback = list(fallback)
        self._recording = recording
        self._prefix = prefix
        self._prompts: list[str] | None = None
        self.tts_error: str | None = None
        self.recording: str | None = None

    async def get(self) -> list[str]:
        if self._prompts is None:
            self._prompts = await self._render()
        return self._prompts

    async def _render(self) -> list[str]:
        if self._recording is not None:
            self.recording = await self._recording()
            if self.recording is not None:
                return [*await self._spoken_prefix(), self.recording]
        if self._tts is not None:
            try:
                rendered = await render_segments(
                    self._tts, self._segments, voice=self._voice, digits=self._digits
                )
                return [prompt.asterisk_name for prompt in rendered]
            except TtsError as exc:
                self.tts_error = str(exc)
                logger.warning("TTS failed; paging built-in sounds: %s", exc)
        else:
            self.tts_error = "no text-to-speech service"
        return self._fallback

    async def _spoken_prefix(self) -> list[str]:
        """The prefix before a recording; nothing when TTS cannot say it (the recording
        alone still says where)."""
        if not self._prefix or self._tts is None:
            return []
        try:
            return [(await self._tts.render(self._prefix)).asterisk_name]
        except TtsError as exc:
            logger.warning("TTS failed; paging the recording without its prefix: %s", exc)
            return []

    @property
    def source(self) -> str:
        if self.recording is not None:
            return "recording"
        return "fallback" if self.tts_error else "tts"


class AlarmLoop:
    def __init__(
        self,
        alarm: Alarm,
        *,
        store: LoopStore,
        pager: Pager,
        settings: AlarmSettings,
        tts: TextToSpeech | None,
        gate: Gate,
        record: Recorder,
        first_delay: float = 0.0,
        drill_settings: DrillSettings | None = None,
        on_drill_paged: Callable[[AlarmLoop], None] | None = None,
        locations: RecordedLocations | None = None,
        speech: Speech | None = None,
    ) -> None:
        """``drill_settings``: what a drill says; ``on_drill_paged(loop)``: a drill paged
        its cycles (the service ends it); ``locations``: recorded locations to page
        instead of the announcement; ``speech``: the department's language
        (fastagi/alarms/language.py), None: the settings' English texts."""
        self.alarm = alarm
        self._store = store
        self._pager = pager
        self._settings = settings
        self._gate = gate
        self._record = record
        self._first_delay = first_delay
        self._on_drill_paged = on_drill_paged
        drill_settings = drill_settings or DrillSettings()
        # A language of its own (not the site's English voice): its templates, its
        # voice, its digit words; pieces all the same, rendered ahead (fastagi/app.py).
        voiced = speech if speech is not None and speech.voice is not None else None
        if alarm.drill is not None:
            template = voiced.drill_announcement_template if voiced else drill_settings.announcement
            segments = announcement_segments(template, alarm.department_name, "")
            fallback = fallback_drill_announcement()
            caller_name = drill_settings.caller_name
        else:
            template = voiced.template if voiced else settings.announcement
            segments = announcement_segments(template, alarm.department_name, alarm.extension)
            fallback = fallback_announcement(alarm.extension)
            caller_name = settings.caller_name
        self._prompts = AnnouncementPrompts(
            tts,
            segments,
            fallback,
            voice=voiced.voice if voiced else None,
            digits=voiced.catalogue.digits if voiced else None,
            **_recorded_location(locations, alarm),
        )
        self._caller_name = caller_name.format(
            department=alarm.department_name, extension=alarm.extension
        )
        self._stopping = asyncio.Event()
        self._page_now = asyncio.Event()
        self._hold = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._interval = _DEFAULT_INTERVAL
        self.cycle = alarm.cycles  # the number of the last cycle paged
        self._unsent = False  # the last page was never sent: no AMI connection

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"alarm-loop-{self.alarm.id}")

    def stop(self) -> None:
        """No new cycle starts from now on; a page in progress is left to the caller."""
        self._stopping.set()

    def page_now(self) -> None:
        """Start the next cycle now instead of at its time (someone asked for the
        announcement again); a page under way finishes first. The schedule then counts
        on from this page. The gate still refuses a deactivated alarm."""
        self._page_now.set()

    def rekey(self, alarm: Alarm) -> None:
        """Go on as ``alarm``: the row a provisional alarm (raised while PostgreSQL was
        down) became. Same schedule; cycles count on from the higher of the two."""
        self.cycle = max(self.cycle, alarm.cycles)
        self.alarm = alarm

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No page starts while this is held (the loop waits at its gate)."""
        async with self._hold:
            yield

    async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait for the loop to end; True if it did, False on timeout."""
        if self._task is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        """End the loop now, even in the middle of a page (shutdown only)."""
        self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_start = loop.time() + self._first_delay
        failures = 0
        while True:
            if self._drill_paged():
                await self._end_drill()
                break
            if await self._sleep_until(next_start, or_ami_back=self._unsent):
                break
            try:
                started = await self._cycle()
            except Exception as exc:
                failures += 1
                logger.exception("cycle of alarm %s failed", self.alarm.id)
                await self._record_error(exc, failures)
                next_start = loop.time() + error_backoff(
                    failures, self._settings.error_backoff, _MAX_BACKOFF
                )
                continue
            if started is None:
                break
            failures = 0
            # The interval _cycle() read fresh after its page, and recorded.
            next_start = next_cycle_start(started, loop.time(), self._interval)
        logger.info("paging loop of alarm %s ended after cycle %s", self.alarm.id, self.cycle)

    def _drill_paged(self) -> bool:
        drill = self.alarm.drill
        return drill is not None and drill.complete(self.cycle)

    async def _end_drill(self) -> None:
        """A drill paged its cycles: no page more; the service deactivates it, which
        stops this loop."""
        logger.info("drill %s paged its %s cycles", self.alarm.id, self.cycle)
        if self._on_drill_paged is not None:
            self._on_drill_paged(self)
        await self._stopping.wait()

    async def _sleep_until(self, deadline: float, *, or_ami_back: bool = False) -> bool:
        """Sleep until ``deadline`` or a request to page now, or (``or_ami_back``) until
        AMI is connected; True (at once) when the loop is told to stop.

        ``or_ami_back`` follows a page that was never sent: nobody heard it, and at a
        site's interval (30-60 s) waiting for the next cycle would leave the alarm
        silent that long after AMI came back (a server that took the alarm over at
        start-up, before its AMI login; Asterisk restarted)."""
        delay = wait_before(asyncio.get_running_loop().time(), deadline)
        stopping = asyncio.ensure_future(self._stopping.wait())
        paging = asyncio.ensure_future(self._page_now.wait())
        wakers: set[asyncio.Future[Any]] = {stopping, paging}
        if or_ami_back:
            wakers.add(asyncio.ensure_future(self._ami_back()))
        try:
            await asyncio.wait(wakers, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waker in wakers:
                waker.cancel()
        self._page_now.clear()
        return self._stopping.is_set()

    async def _ami_back(self) -> None:
        await asyncio.sleep(_UNSENT_RETRY_PAUSE)
        await self._pager.wait_connected()

    async def _fresh_interval(self) -> int:
        try:
            self._interval = await self._store.interval_seconds(self.alarm)
        except Exception as exc:
            logger.warning("cannot read the interval of alarm %s: %s", self.alarm.id, exc)
        return self._interval

    async def _devices(self) -> Sequence[str]:
        if self.alarm.drill is not None:
            if self.alarm.drill.devices:
                return self.alarm.drill.devices
            if self.alarm.department_id is None:
                return ()  # its department was removed: a drill never pages every group
        if self.alarm.department_id is None and self._settings.unknown_department_devices:
            return tuple(self._settings.unknown_department_devices)
        # Of no department and no devices set: every paging group's.
        return await self._store.paging_devices(self.alarm)

    async def _cycle(self) -> float | None:
        """One page; when it started (its Originate was sent), or None when the alarm
        turned out to be inactive (the loop ends). The schedule counts from that moment,
        not from before the prompt and device look-ups, so they do not stretch it."""
        self._unsent = False
        prompts = await self._prompts.get()
        devices = await self._devices()
        alarm = self.alarm
        sent = asyncio.Event()
        dialled = asyncio.Event()
        async with self._hold:
            if self._stopping.is_set():
                return None
            async with self._gate(alarm.id) as turn:
                if turn.active is False:
                    self._stopping.set()
                    return None
                if self._stopping.is_set():
                    return None
                # Never below the row's count: a journal replayed meanwhile (this
                # server's, or a dead leader's) may have counted cycles this loop did not.
                cycle = max(self.cycle, turn.cycles) + 1
                drill = alarm.drill
                if drill is not None and cycle > drill.cycles:
                    # Counted elsewhere meanwhile: the drill has paged its cycles. Not
                    # paged; the loop ends the drill at its next turn.
                    self.cycle = cycle - 1
                    return asyncio.get_running_loop().time()
                page = asyncio.create_task(
                    self._pager.page(
                        alarm.id,
                        cycle,
                        devices,
                        prompts,
                        caller_name=self._caller_name,
                        caller_number=alarm.extension,
                        sent=sent,
                        dialled=dialled,
                    )
                )
                # Hold the gate until the Originate is on its way (page() sets ``sent``
                # on every path, failures included) ...
                await _first(page, sent)
                started = asyncio.get_running_loop().time()
                started_at = datetime.now(UTC)
                # ... and until its INVITEs are out (or the cap): see the theory above.
                await _first(page, dialled, self._settings.dial_confirm_timeout)
                # Counted now, before the page lock is released.
                await turn.count(cycle, started_at)
        self.cycle = cycle
        result = await page
        self._unsent = result.unsent
        # Fresh after each page: an administrator may have changed it meanwhile. It sets
        # the wait before the next cycle, and the cycle's event records it.
        interval = await self._fresh_interval()
        await self._record_cycle(
            cycle, result, interval, gate_checked=turn.active is True, started_at=started_at
        )
        return started

    async def _record_cycle(
        self,
        cycle: int,
        result: CycleResult,
        interval: int,
        *,
        gate_checked: bool,
        started_at: datetime,
    ) -> None:
        details: dict[str, object] = {
            "cycle": cycle,
            **result.details(),
            "started_at": started_at.isoformat(),
            "prompts": self._prompts.source,
            "interval": interval,
        }
        if self._prompts.recording is not None:
            details["recording"] = self._prompts.recording
        if self._prompts.tts_error:
            details["tts_error"] = self._prompts.tts_error
        if not gate_checked:
            details["active_check"] = "database unavailable; paged on local state"
        event = HistoryEvent(
            kind=EventKind.PAGE_CYCLE,
            alarm_id=self.alarm.id,
            extension=self.alarm.extension,
            department=self.alarm.department_name,
            details=details,
        )
        try:
            await self._store.record_cycle(self.alarm.id, event)
        except Exception as exc:
            # The event itself must not be lost: the service's recorder keeps it until
            # PostgreSQL takes it (events are idempotent by event_id).
            logger.warning("cannot record cycle %s of alarm %s: %s", cycle, self.alarm.id, exc)
            await self._record(event)

    async def _record_error(self, exc: Exception, failures: int) -> None:
        await self._record(
            HistoryEvent(
                kind=EventKind.ERROR,
                alarm_id=self.alarm.id,
                extension=self.alarm.extension,
                department=self.alarm.department_name,
                details={
                    "where": "paging loop",
                    "error": repr(exc)[:500],
                    "failures_in_a_row": failures,
                },
            )
        )
