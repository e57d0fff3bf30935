"""Wiring: build the services from the settings and run the FastAGI server.

``fastagi serve`` is the production entry point; ``make run`` (fastagi_dev/devenv.py)
runs the same ``running_server`` beside a sandbox Asterisk and an embedded PostgreSQL.

Start-up order follows what a panic call needs: the database pool and the alarm service
first (it resumes the loops of active alarms), the AMI connection in the background (a
trigger must be answered even while Asterisk's manager is unreachable: paging retries),
then, once AMI answers, the adoption of alarms the dialplan raised while no server took
panic calls (fastagi/alarms/fallback.py), prompts rendered ahead of time, then the
listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import random
import resource
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from fastagi.agi.server import AgiServer, Flow
from fastagi.agi.stats import AgiStats
from fastagi.alarms.drill_schedule import DrillScheduler
from fastagi.alarms.emergency import EmergencyCaller
from fastagi.alarms.fallback import FallbackAdopter
from fastagi.alarms.lamps import Lamps
from fastagi.alarms.language import language_for
from fastagi.alarms.locations import RecordedLocations
from fastagi.alarms.notifications import AlarmNotifications
from fastagi.alarms.outage import Outage
from fastagi.alarms.paging import Pager
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.alarms.service import AlarmService
from fastagi.ami import AmiAuthError, AmiClient, AmiError
from fastagi.assurance.watch import HealthMonitor
from fastagi.config import Settings
from fastagi.config.catalogues import load_languages
from fastagi.domain.directory import Directory
from fastagi.domain.language import Languages
from fastagi.flows import prompts
from fastagi.flows.acknowledge import AcknowledgeFlow
from fastagi.flows.deactivate import DeactivateFlow
from fastagi.flows.drill import DrillFlow
from fastagi.flows.panic import PanicFlow
from fastagi.flows.probe import ProbeFlow
from fastagi.flows.record_location import RecordLocationFlow
from fastagi.notify import Notifier
from fastagi.sdnotify import SystemdNotifier, watchdog_fed
from fastagi.store import Stores
from fastagi.store.emergency import EmergencyStore
from fastagi.store.journal import Journal
from fastagi.store.pool import answers, create_pool
from fastagi.store.probe import ProbeStore
from fastagi.tts import TextToSpeech
from fastagi.tts.announcement import DIGIT_CLIPS, department_texts

logger = logging.getLogger(__name__)

AMI_RETRY_MAX_DELAY = 30.0
# On shutdown, how long deliveries still queued get before they are recorded abandoned.
NOTIFY_DRAIN_SECONDS = 10.0
# Open files needed besides the FastAGI sessions: the database pool, AMI, the TTS
# worker, notifications, logs, with room to spare.
RESERVED_FILES = 256
# Young-generation collection threshold for the serving process (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


@dataclass(frozen=True)
class Services:
    pool: asyncpg.Pool[asyncpg.Record]
    store: Stores
    recorder: HistoryRecorder
    ami: AmiClient
    tts: TextToSpeech
    alarms: AlarmService
    notifier: Notifier
    emergency: EmergencyCaller
    fallback: FallbackAdopter
    pager: Pager
    # The scheduled checks ([health]); None when disabled. Run once the listener is up.
    health: HealthMonitor | None
    # What the FastAGI listener counts (fastagi/agi/stats.py), for the metrics.
    agi_stats: AgiStats

    drills: DrillScheduler
    prompt_keeper: PromptKeeper
    # The prompt catalogues (built-in and [flows] catalogues), read once at start-up.
    languages: Languages


def build_routes(services: Services, settings: Settings) -> Mapping[str, Flow]:
    return {
        "probe": ProbeFlow(ProbeStore(services.pool)),
        "panic": PanicFlow(
            services.alarms,
            services.store.policy,
            record=services.recorder.record,
            tts=services.tts,
            settings=settings.flows,
            languages=services.languages,
        ),
        "deactivate": DeactivateFlow(
            services.alarms,
            services.store.policy,
            services.store.deactivators,
            record=services.recorder.record,
            tts=services.tts,
            settings=settings.flows,
            languages=services.languages,
        ),
        "acknowledge": AcknowledgeFlow(
            services.emergency, services.tts, settings.emergency, settings.flows, settings.drill
        ),
        "drill": DrillFlow(
            services.alarms,
            record=services.recorder.record,
            tts=services.tts,
            settings=settings.drill,
            flow_settings=settings.flows,
            languages=services.languages,
        ),
        "record-location": RecordLocationFlow(
            services.alarms,
            services.store,
            tts=services.tts,
            settings=settings.recording,
            flow_settings=settings.flows,
        ),
    }


async def connect_ami(ami: AmiClient) -> None:
    """Connect, retrying with capped exponential backoff and jitter until it works: the
    server must come up (and take panic calls) while Asterisk restarts. The client
    itself reconnects after a later loss. A refused login is a configuration error that
    retrying will not fix, so it is logged loudly, then retried at the slowest pace."""
    delay = 0.5
    while True:
        try:
            await ami.connect()
        except AmiAuthError as exc:
            logger.error("AMI login refused: check [ami] username and secret (%s)", exc)
            delay = AMI_RETRY_MAX_DELAY
        except (AmiError, OSError) as exc:
            logger.warning("AMI not reachable yet (%s); retrying in %.1f s", exc, delay)
        else:
            logger.info("AMI connected")
            return
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
        delay = min(delay * 2, AMI_RETRY_MAX_DELAY)


async def adopt_fallback_alarms(connecting: asyncio.Task[None], fallback: FallbackAdopter) -> None:
    """Once AMI is connected, adopt the alarms the dialplan raised while no server took
    panic calls, and keep doing so (at each reconnection, UserEvent, interval)."""
    await connecting
    await fallback.run()


@dataclass
class PromptBatch:
    """Texts and clips to render with one voice (None: the site's)."""

    voice: str | None
    texts: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)


def directory_prompts(
    directory: Directory, languages: Languages, settings: Settings
) -> list[PromptBatch]:
    """What the directory's calls and pages will say, each department in its language
    (fastagi/alarms/language.py) and voice, in the order to render: pages first (a page
    late is late for many), then questions (a question late delays one caller), then
    drills (scheduled ahead), then the other languages' fixed texts. Announcement pieces
    are clips, as they are paged (fastagi/tts/announcement.py); a language of its own
    speaks extensions from clips of its digit words."""
    pages: dict[str | None, PromptBatch] = {}
    questions: dict[str | None, PromptBatch] = {}
    drills: dict[str | None, PromptBatch] = {}
    fixed: dict[str | None, PromptBatch] = {}
    for department in [*directory.departments, None]:  # None: an unknown department's
        speech = language_for(
            department.id if department else None,
            directory,
            languages,
            settings.alarm,
            settings.drill,
        )
        voice, catalogue = speech.voice, speech.catalogue
        name = department.name if department else None
        page = pages.setdefault(voice, PromptBatch(voice))
        if voice is not None:
            page.clips += catalogue.digits
            fixed.setdefault(voice, PromptBatch(voice, prompts.spoken_fixed_texts(catalogue)))
        page.clips += department_texts([speech.template], [name])
        if department is None:
            continue  # its question names the caller's extension: rendered at the call
        question = questions.setdefault(voice, PromptBatch(voice))
        mode = department.confirmation_mode  # None: the site's, either of the spoken two
        if mode in (None, "voice"):
            question.texts.append(catalogue.text("question", department=department.name))
        if mode in (None, "neutral"):
            question.texts.append(catalogue.text("neutral_question"))
        drills.setdefault(voice, PromptBatch(voice)).clips += department_texts(
            [speech.drill_announcement_template], [department.name]
        )
    return [
        batch
        for batches in (pages, questions, drills, fixed)
        for batch in batches.values()
        if batch.texts or batch.clips
    ]


class PromptKeeper:
    """Renders what callers and pages will say before anyone calls: a prompt rendered
    during a call costs its caller about a tenth of a second, one rendered now costs nothing.

    At start-up (in the background: the listener accepts calls meanwhile) the fixed texts
    and the digit clips, then for the directory and every reload of it (each change to a
    department or mapping, by NOTIFY) each department's question and announcement pieces
    in its language and voice (:func:`directory_prompts`), so the first alarm after a
    change renders nothing. Renders already on disk cost a stat: a reload re-checks
    every department cheaply.
    """

    def __init__(
        self, tts: TextToSpeech, alarms: AlarmService, settings: Settings, languages: Languages
    ) -> None:
        self._tts = tts
        self._alarms = alarms
        self._settings = settings
        self._languages = languages
        self._prepared: Directory | None = None  # the last one whose prompts are on disk
        self._changed = asyncio.Condition()
        # Leave one render slot free for a live call's render (a name typed a minute ago).
        self._parallel = max(1, settings.tts.max_parallel_renders - 1)

    async def run(self) -> None:
        tts = self._tts
        # prerender() logs each failure; the calls then play built-in sounds instead.
        await tts.prerender(
            prompts.spoken_fixed_texts(self._languages.get(None)),
            clips=DIGIT_CLIPS,
            parallel=self._parallel,
        )
        directory: Directory | None = None
        while True:
            directory = await self._alarms.wait_directory(functools.partial(_is_not, directory))
            for batch in directory_prompts(directory, self._languages, self._settings):
                await tts.prerender(
                    batch.texts, clips=batch.clips, voice=batch.voice, parallel=self._parallel
                )
            async with self._changed:
                self._prepared = directory
                self._changed.notify_all()

    async def wait_prepared(self, live: Callable[[Directory], bool]) -> Directory:
        """Wait until the prompts of a directory satisfying ``live`` were rendered."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._prepared is not None and live(self._prepared)
            )
            assert self._prepared is not None
            return self._prepared


def _is_not(old: object, new: object) -> bool:
    return new is not old


@contextlib.asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    background: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        background.add(task)
        task.add_done_callback(background.discard)
        return task

    if settings.alarm.unknown_department_devices == []:
        logger.error(
            "alarm.unknown_department_devices is empty and allowed to be: an alarm from an"
            " extension that belongs to no department will be recorded but page no phone"
        )
    pool = await create_pool(settings.database)
    ami = AmiClient.from_settings(settings.ami)
    tts = TextToSpeech(settings.tts)
    store = Stores.over(pool)
    # The one way history is written, by whoever acts; events wait in the journal,
    # fsync'd, while PostgreSQL is away.
    recorder = HistoryRecorder(
        store.history,
        Journal(settings.journal),
        timeout=settings.journal.write_timeout,
        outage=Outage(probe=functools.partial(answers, settings.database)),
    )
    notifier = Notifier(settings.notify, record=recorder.record)
    notifications = AlarmNotifications(notifier, store.alarms, drills=settings.drill.notify)
    instance_id = f"{socket.gethostname()}:{os.getpid()}"
    emergency = EmergencyCaller(
        ami,
        EmergencyStore(pool),
        settings.emergency,
        record=recorder.record,
        instance_id=instance_id,
        on_escalated=notifications.escalated,
        on_acknowledged=notifications.acknowledged,
        drill_caller_name=settings.drill.caller_name,
    )
    pager = Pager(ami, settings.alarm)
    languages = load_languages(settings.flows.catalogues)
    alarms = AlarmService(
        store,
        pager,
        Lamps(ami, settings.alarm, record=recorder.record, instance_id=instance_id),
        tts,
        settings.alarm,
        recorder=recorder,
        instance_id=instance_id,
        pool=pool,
        listeners=[notifications, emergency],
        drill_settings=settings.drill,
        locations=RecordedLocations(store.recordings, settings.recording, record=recorder.record),
        languages=languages,
    )
    fallback = FallbackAdopter(
        ami,
        alarms,
        store.history,
        recorder,
        instance_id=instance_id,
        scan_interval=settings.alarm.fallback_scan_interval,
    )
    health = (
        HealthMonitor(
            settings,
            pool=pool,
            ami=ami,
            notifier=notifier,
            record=recorder.record,
            instance_id=instance_id,
        )
        if settings.health.enabled
        else None
    )

    # [drill] schedule: every server runs it; the slot's row claim lets one start each.
    drills = DrillScheduler(alarms, settings.drill, recorder=recorder, instance_id=instance_id)
    services = Services(
        pool=pool,
        store=store,
        recorder=recorder,
        ami=ami,
        tts=tts,
        alarms=alarms,
        notifier=notifier,
        emergency=emergency,
        fallback=fallback,
        pager=pager,
        health=health,
        agi_stats=AgiStats(),
        drills=drills,
        prompt_keeper=PromptKeeper(tts, alarms, settings, languages),
        languages=languages,
    )
    try:
        connecting = spawn(connect_ami(ami), "ami-connect")
        await alarms.start()
        spawn(adopt_fallback_alarms(connecting, fallback), "fallback-adopter")
        spawn(services.prompt_keeper.run(), "prompt-keeper")
        if drills.enabled:
            spawn(drills.run(), "drill-schedule")
        yield services
    finally:
        for task in list(background):
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # The alarm service first: its last listener calls (an alarm that ended a moment
        # ago: the e-mail, the SMS, the emergency call's end) reach the emergency caller
        # and the notifier while they still take them. The recorder (and its journal)
        # last: everyone before it records.
        await alarms.close()
        await emergency.close()
        await notifier.close(drain_timeout=NOTIFY_DRAIN_SECONDS)
        await recorder.close()
        await ami.close()
        await tts.aclose()
        await pool.close()


# An interface served beside the FastAGI listener, over the same services (the web
# console, fastagi/web): started after the listener, stopped before it. Passed in by the
# layer above (cli/serve.py, the dev environment), which this module does not import.
Interface = Callable[[Services, Settings], contextlib.AbstractAsyncContextManager[object]]


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, interfaces: Sequence[Interface] = ()
) -> AsyncIterator[AgiServer]:
    """The services, the listener and ``interfaces``, closed gracefully on exit: calls
    in progress get ``agi.shutdown_grace`` seconds to finish."""
    async with running_services(settings) as services:
        server = AgiServer(settings.agi, build_routes(services, settings), stats=services.agi_stats)
        await server.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if services.health is not None:
                    await stack.enter_async_context(watching(services.health))
                for interface in interfaces:
                    await stack.enter_async_context(interface(services, settings))
                yield server
        finally:
            await server.close(settings.agi.shutdown_grace)


@contextlib.asynccontextmanager
async def watching(health: HealthMonitor) -> AsyncIterator[None]:
    """The scheduled checks, from once the listener is up (the probe call reaches it)
    until the server stops; then this server's report stops counting."""
    task = asyncio.create_task(health.run(), name="scheduled-checks")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await health.withdraw()


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def raise_open_files_limit(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE to fit ``agi.max_sessions`` sockets (up to the hard
    limit); a process left at the common 1024 would fail accept() with EMFILE under
    load, and asyncio then stops accepting for a second: calls fail. Returns the limit."""
    needed = settings.agi.max_sessions + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "agi.max_sessions is %d but the open-files limit is %d: lower max_sessions"
            " or raise the limit (systemd LimitNOFILE)",
            settings.agi.max_sessions,
            soft,
        )
    return soft


async def serve(settings: Settings, interfaces: Sequence[Interface] = ()) -> None:
    """The production server. Under systemd (``Type=notify``, fastagi/sdnotify.py) it
    says READY=1 once the listener accepts calls and STOPPING=1 when a signal arrives,
    and feeds the watchdog from the event loop throughout, so a blocked loop is killed
    and restarted."""
    notifier = SystemdNotifier.from_environment()
    try:
        async with watchdog_fed(notifier), running_server(settings, interfaces) as server:
            logger.info("FastAGI server listening", extra={"port": server.port})
            notifier.notify("READY=1", f"STATUS=listening on port {server.port}")
            await until_signalled()
            notifier.notify("STOPPING=1", "STATUS=stopping: letting calls finish")
            logger.info("stopping: letting calls finish")
    finally:
        notifier.close()


def tune_gc() -> None:
    """The objects of start-up (modules, settings, schemas) live as long as the process:
    freeze them out of every collection. A call allocates hundreds of short-lived objects
    and leaves no reference cycles behind (the AGI server is written so), so young
    collections can be rarer than the default of one per 700 allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed: it is markedly faster for many
    short connections, which is what FastAGI is."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
