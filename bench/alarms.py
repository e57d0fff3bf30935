"""Many alarms at once (issue 12, part 2) through the sandbox: SIPp paging phones ->
sandbox Asterisk -> our alarm service (``running_services``, the production wiring) ->
PostgreSQL.

``N`` departments, each with its own paging group of two phones and an interval of 10-30
s, each raise an alarm at once; they page for ``seconds``; then all are deactivated one
after the other. What the phones received (SIPp's message logs: each INVITE carries the
caller name "PANIC <department>") says, per department:

- the gap between the starts of consecutive pages against its interval: the p95 of
  |gap - interval| / interval, and cycles missed (a gap over 1.5 intervals) or doubled
  (under half an interval);
- INVITEs that arrived after that department's deactivation returned (must be 0).

And of the server (this process: the service runs in it, the phones and Asterisk do
not): its resident memory growth per alarm (VmRSS before the activations and with all
alarms running; also right after the activations, and with BENCH_TRACEMALLOC=1 where
the Python heap grew), and its CPU time per page cycle while the alarms run, beside the CPU time
of an idle second measured in the same run (the baseline).

The sandbox has 100 paging phones (PJSIP 200-299, one SIPp process each); 100 SIPp
processes took a core of this 2-core machine, so the groups share ``phones`` phones (20 by
default): pairs dealt out round-robin, and a phone in a page answers another department's
page as a further call (SIPp answers each INVITE on its own). Driven by
tests/e2e/test_alarm_scale.py (its fixtures start the sandbox and PostgreSQL):
``make bench-alarms`` (BENCH_ALARMS=200 BENCH_SECONDS=180 BENCH_PHONES=20).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import resource
import socket
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.stats import percentile
from fastagi.alarms.loop import AnnouncementPrompts
from fastagi.alarms.paging import Pager
from fastagi.alarms.service import Activation
from fastagi.ami.client import AmiClient
from fastagi.app import running_services
from fastagi.config import Settings
from fastagi.domain.rules import announcement_segments, next_cycle_start, wait_before
from fastagi.store import Stores
from fastagi.tts import TextToSpeech, fallback_announcement
from fastagi_dev.sandbox.instance import PAGING_PHONES, Sandbox
from fastagi_dev.sandbox.ports import free_port
from fastagi_dev.sandbox.sipp import PagingPhone, SipMessage

INTERVALS = range(10, 31)
# A cycle is missed when a gap is over 1.5 intervals, doubled when under half of one.
MISSED, DOUBLED = 1.5, 0.5
# After the last deactivation: how long to keep listening for a stray INVITE.
QUIET_SECONDS = 5.0


def department_name(index: int) -> str:
    return f"Scale {index:04d}"


def interval_of(index: int) -> int:
    """10-30 s, spread evenly over the departments (7 is prime to 21)."""
    return INTERVALS[(index * 7) % len(INTERVALS)]


def phones_of(index: int, phones: Sequence[int]) -> tuple[int, int]:
    return phones[(2 * index) % len(phones)], phones[(2 * index + 1) % len(phones)]


def caller_of(index: int) -> str:
    """The caller name its pages carry (``[alarm] caller_name``'s default), which the
    phones' logs are read by."""
    return f"PANIC {department_name(index)}"


def trigger_of(index: int) -> str:
    return str(70000 + index)


async def seed(store: Stores, alarms: int, phones: Sequence[int]) -> None:
    for index in range(alarms):
        name = department_name(index)
        await store.directory.add_paging_group(name)
        for phone in phones_of(index, phones):
            await store.directory.add_paging_device(name, f"PJSIP/{phone}")
        await store.directory.add_department(name, interval_of(index), paging_group=name)
        await store.directory.map_extensions(name, trigger_of(index))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def thread_count() -> int:
    # Each thread may get its own malloc arena: RSS that grows with threads, not alarms.
    return len(os.listdir("/proc/self/task"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def p50_p95_max(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and max of ``values`` (zeros for none)."""
    return (percentile(values, 0.5), percentile(values, 0.95), max(values, default=0.0))


@dataclass
class Gap:
    department: int
    at: float  # seconds since the activations
    interval: int
    seconds: float

    @property
    def error(self) -> float:
        return abs(self.seconds - self.interval) / self.interval


@dataclass
class AlarmScaleResult:
    alarms: int
    seconds: float
    phones: int
    gaps: list[Gap] = field(default_factory=list)
    # The same gaps as the server scheduled them: between the moments its page_cycle
    # events say each page's Originate went out (``started_at``), before Asterisk dialled.
    server_gap_errors: list[float] = field(default_factory=list)
    pages: int = 0
    cycles_counted: int = 0  # the alarm rows' ``cycles`` (the server's own count)
    missed: int = 0
    doubled: int = 0
    invites_after_deactivation: int = 0
    # What the server's page_cycle events say of each device dialled: answered, busy...
    device_outcomes: dict[str, int] = field(default_factory=dict)
    rss_growth_per_alarm: float = 0.0
    # The same growth read right after the activations returned: what an alarm holds,
    # before any page cycle has run (the rest grew while they paged).
    rss_growth_per_alarm_at_start: float = 0.0
    # BENCH_TRACEMALLOC=1: where the Python heap grew meanwhile, top allocation sites.
    heap_growth: list[str] = field(default_factory=list)
    heap_growth_per_alarm: float = 0.0
    # The same from right after the activations to the end: what paging itself kept,
    # which a long alarm would keep growing if anything leaked per cycle.
    heap_growth_paging: list[str] = field(default_factory=list)
    heap_growth_paging_per_alarm: float = 0.0
    cpu_per_cycle_ms: float = 0.0
    threads: tuple[int, int] = (0, 0)  # the process's, before the burst and at the end
    idle_cpu_per_second_ms: float = 0.0
    activation_seconds: float = 0.0
    # Each activate() call's own time, from the burst's start: p50 / p95 / max.
    activation_each: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Activations that did not reach PostgreSQL in time and raised a provisional alarm
    # (negative id, fastagi/alarms/provisional.py): paged all the same, written later.
    provisional: int = 0
    # Each alarm's first INVITE at its phones, from the burst's start: p50 / p95 / max.
    first_page: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Department lamps that Asterisk did not show lit when every activate() had
    # returned (before the service's next scan, which would light them).
    lamps_unlit: int = 0
    deactivation_seconds: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def gap_error_p95(self) -> float:
        return percentile([gap.error for gap in self.gaps], 0.95)

    @property
    def gap_error_max(self) -> float:
        return max((gap.error for gap in self.gaps), default=0.0)

    def lines(self) -> list[str]:
        load = " ".join(f"{n:.2f}" for n in self.load)
        _, sent_p95, sent_max = p50_p95_max(self.server_gap_errors)
        return [
            f"{self.alarms} alarms at once for {self.seconds:.0f} s ({self.phones} SIPp phones,"
            f" intervals 10-30 s): {self.pages} pages, {self.cycles_counted} cycles counted;"
            f" load average {load}",
            f"  gap error |gap - interval| / interval: p95 {self.gap_error_p95 * 100:.2f} %,"
            f" max {self.gap_error_max * 100:.2f} %"
            f" over {len(self.gaps)} gaps; missed cycles {self.missed}, doubled {self.doubled}",
            f"  the same as the server sent them (page_cycle started_at): p95"
            f" {sent_p95 * 100:.2f} %, max {sent_max * 100:.2f} %"
            f" over {len(self.server_gap_errors)} gaps",
            f"  server RSS growth per alarm: {self.rss_growth_per_alarm / 1024:.1f} KB"
            f" ({self.rss_growth_per_alarm_at_start / 1024:.1f} KB once activated);"
            f" server CPU per page cycle: {self.cpu_per_cycle_ms:.2f} ms"
            f" (idle: {self.idle_cpu_per_second_ms:.2f} ms per second, the baseline);"
            f" threads {self.threads[0]} before, {self.threads[1]} at the end",
            f"  activating all: {self.activation_seconds:.2f} s (each: p50"
            f" {self.activation_each[0]:.2f} s, p95 {self.activation_each[1]:.2f} s, max"
            f" {self.activation_each[2]:.2f} s; {self.provisional} provisional, without"
            f" PostgreSQL); first page at the phones: p50 {self.first_page[0]:.2f} s, p95"
            f" {self.first_page[1]:.2f} s, max {self.first_page[2]:.2f} s after the burst"
            f" began; lamps unlit once all returned: {self.lamps_unlit};"
            f" deactivating all:"
            f" {self.deactivation_seconds:.2f} s; INVITEs after a department's deactivation:"
            f" {self.invites_after_deactivation}",
            f"  device outcomes in the server's page_cycle events: {self.device_outcomes}",
            *(
                [
                    f"  Python heap growth per alarm (tracemalloc):"
                    f" {self.heap_growth_per_alarm / 1024:.1f} KB; where:"
                ]
                if self.heap_growth
                else []
            ),
            *(f"    {line}" for line in self.heap_growth),
            *(
                [
                    f"  of it while paging, from right after the activations:"
                    f" {self.heap_growth_paging_per_alarm / 1024:.1f} KB; where:"
                ]
                if self.heap_growth_paging
                else []
            ),
            *(f"    {line}" for line in self.heap_growth_paging),
        ]


def heap_growth(grown: list[tracemalloc.StatisticDiff], alarms: int) -> tuple[float, list[str]]:
    """Bytes grown per alarm, and the top 15 sites, from a tracemalloc comparison."""
    return sum(stat.size_diff for stat in grown) / alarms, [
        f"{stat.size_diff / alarms / 1024:+.1f} KB/alarm, {stat.count_diff:+d} blocks:"
        f" {stat.traceback[0].filename}:{stat.traceback[0].lineno}"
        for stat in grown[:15]
    ]


def free_udp_block(size: int, taken: set[int]) -> int:
    """The first of ``size`` consecutive UDP ports free right now and not in ``taken``."""
    port = free_port(socket.SOCK_DGRAM) // size * size
    while True:
        block = range(port, port + size)
        if port + size < 65536 and not taken.intersection(block) and all(map(_udp_free, block)):
            taken.update(block)
            return port
        port = 20000 + (port + size - 20000) % 40000


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ScalePhone(PagingPhone):
    """A paging phone whose SIPp binds its media ports (audio and video, RTP and RTCP: 4)
    in a block of its own: from SIPp's default (6000) each phone tries 100 ports two apart,
    so the 100th phone found none."""

    def __init__(self, sandbox: Sandbox, ext: int, workdir: Path, taken: set[int]) -> None:
        super().__init__(sandbox, ext, workdir)
        self._extra = (*self._extra, "-mp", str(free_udp_block(4, taken)))


async def start_phones(
    stack: contextlib.AsyncExitStack, sandbox: Sandbox, numbers: Sequence[int], workdir: Path
) -> list[ScalePhone]:
    """The paging phones ``numbers``, each SIPp process in its own block of media ports,
    stopped when ``stack`` closes."""
    media_ports: set[int] = set()
    return [
        await stack.enter_async_context(ScalePhone(sandbox, n, workdir, media_ports))
        for n in numbers
    ]


def caller_name(invite: SipMessage) -> str:
    return invite.header("From", "f").partition('"')[2].partition('"')[0]


class HeardInvites(Protocol):
    """What :func:`page_starts` reads of a phone (a :class:`PagingPhone`)."""

    ext: int

    def received(self, method_or_status: str) -> list[SipMessage]: ...


def page_starts(phones: Sequence[HeardInvites]) -> dict[str, list[float]]:
    """Per caller name, when (epoch seconds) each page reached the first phone of its
    group. Page() dials each device once per page, so at one phone an INVITE is a page
    (retransmissions are left out by ``received``), and no grouping of the two phones'
    INVITEs by time is needed: a saturated Asterisk dialled a page's second phone more
    than 5 s after its first, which such a grouping took for a page more. SIPp logs
    local time without a zone: ``timestamp()`` reads it as such."""
    arrivals: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for phone in phones:
        for invite in phone.received("INVITE "):
            arrivals[caller_name(invite)][phone.ext].append(invite.time.timestamp())
    starts: dict[str, list[float]] = {}
    for name, by_phone in arrivals.items():
        # The k-th page is the k-th INVITE at each phone that heard all of them: the
        # earliest of those, as when the page reached its first phone.
        most = max(len(times) for times in by_phone.values())
        complete = [sorted(times) for times in by_phone.values() if len(times) == most]
        starts[name] = [min(page) for page in zip(*complete, strict=True)]
    return starts


async def read_history(
    store: Stores, activations: Sequence[Activation], result: AlarmScaleResult
) -> None:
    """What the server's page_cycle events say: each device's outcome, and the gaps
    between the moments its Originates went out."""
    outcomes: dict[str, int] = defaultdict(int)
    for index, activation in enumerate(activations):
        sent: list[float] = []
        for event in await store.history.timeline(activation.alarm.id):
            if event.kind == "page_cycle":
                for status in dict(event.details.get("devices") or {}).values():
                    outcomes[str(status)] += 1
                started_at = event.details.get("started_at")
                if isinstance(started_at, str):
                    sent.append(dt.datetime.fromisoformat(started_at).timestamp())
        sent.sort()
        interval = interval_of(index)
        result.server_gap_errors += [
            abs(after - before - interval) / interval for before, after in itertools.pairwise(sent)
        ]
    result.device_outcomes = dict(outcomes)


async def run(
    sandbox: Sandbox,
    settings: Settings,
    store: Stores,
    workdir: Path,
    *,
    alarms: int,
    seconds: float,
    phones: int = 20,
) -> AlarmScaleResult:
    """``phones``: how many SIPp phones share the paging groups (each SIPp process costs
    the machine CPU of its own: 100 of them took a core of this 2-core machine)."""
    phone_numbers = list(PAGING_PHONES)[: min(phones, 2 * alarms)]
    await seed(store, alarms, phone_numbers)
    result = AlarmScaleResult(alarms, seconds, len(phone_numbers))
    async with contextlib.AsyncExitStack() as stack:
        sipps = await start_phones(stack, sandbox, phone_numbers, workdir)
        services = await stack.enter_async_context(running_services(settings))
        directory = await services.prompt_keeper.wait_prepared(
            lambda d: all(d.department_for(trigger_of(i)) for i in range(alarms))
        )
        # The baseline: the server's CPU time over an idle second (maintenance, AMI).
        idle_from = cpu_seconds()
        await asyncio.sleep(1.0)
        result.idle_cpu_per_second_ms = (cpu_seconds() - idle_from) * 1000
        tracing = bool(os.environ.get("BENCH_TRACEMALLOC"))
        if tracing:
            tracemalloc.start(1)
            heap_before = tracemalloc.take_snapshot()
        rss_before = rss_bytes()
        threads_before = thread_count()
        started_wall = time.time()
        started = time.perf_counter()
        # At once: the triggers of 200 desk phones arrive as concurrent AGI sessions.
        each: list[float] = []

        async def activate(i: int) -> Activation:
            activation = await services.alarms.activate(
                trigger_of(i), directory.department_for(trigger_of(i)), uniqueid=f"scale-{i}"
            )
            each.append(time.perf_counter() - started)
            return activation

        activations = await asyncio.gather(*(activate(i) for i in range(alarms)))
        result.activation_seconds = time.perf_counter() - started
        result.activation_each = p50_p95_max(each)
        result.provisional = sum(a.alarm.id < 0 for a in activations)
        prefix = settings.alarm.department_lamp_prefix
        states = await asyncio.gather(
            *(
                services.ami.get_device_state(f"{prefix}{a.alarm.department_id}")
                for a in activations
            )
        )
        result.lamps_unlit = sum(state != settings.alarm.lamp_state for state in states)
        result.rss_growth_per_alarm_at_start = (rss_bytes() - rss_before) / alarms
        if tracing:
            heap_activated = tracemalloc.take_snapshot()
        cpu_from = cpu_seconds()
        await asyncio.sleep(seconds)
        cpu_used = cpu_seconds() - cpu_from
        result.rss_growth_per_alarm = (rss_bytes() - rss_before) / alarms
        result.threads = (threads_before, thread_count())
        if tracing:
            heap_after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            result.heap_growth_per_alarm, result.heap_growth = heap_growth(
                heap_after.compare_to(heap_before, "lineno"), alarms
            )
            result.heap_growth_paging_per_alarm, result.heap_growth_paging = heap_growth(
                heap_after.compare_to(heap_activated, "lineno"), alarms
            )
        deactivated_at: dict[str, float] = {}
        started = time.perf_counter()
        for index, activation in enumerate(activations):
            await services.alarms.deactivate(activation.alarm.id, by="bench", reason="over")
            deactivated_at[caller_of(index)] = time.time()
        result.deactivation_seconds = time.perf_counter() - started
        cycles = [await store.alarms.get_alarm(a.alarm.id) for a in activations]
        result.cycles_counted = sum(alarm.cycles for alarm in cycles if alarm is not None)
        cycles_window = sum((alarm.cycles if alarm is not None else 0) for alarm in cycles)
        await read_history(store, activations, result)
        result.cpu_per_cycle_ms = cpu_used * 1000 / max(1, cycles_window)
        await asyncio.sleep(QUIET_SECONDS)
    measure_at_phones(result, sipps, deactivated_at, started_wall)
    return result


class _FloorAlarm:
    """One department's page loop in the floor: page, wait out the interval from the
    page's start (``next_cycle_start``, as the alarm loop schedules), page again."""

    def __init__(
        self, index: int, pager: Pager, devices: Sequence[str], prompts: list[str]
    ) -> None:
        self.index = index
        self._pager = pager
        self._devices = devices
        self._prompts = prompts
        self.sent: list[float] = []  # epoch seconds, as each Originate went out
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = interval_of(self.index)
        next_start = loop.time()
        while not await _stopped_within(self.stopping, wait_before(loop.time(), next_start)):
            # No await between the check above and page() listing the page in flight, so
            # a stop that Pager.cancel() follows cannot miss a page on its way.
            started = loop.time()
            self.sent.append(time.time())
            await self._pager.page(
                self.index + 1,
                len(self.sent),
                self._devices,
                self._prompts,
                caller_name=caller_of(self.index),
                caller_number=trigger_of(self.index),
            )
            next_start = next_cycle_start(started, loop.time(), interval)


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
    return stopping.is_set()


async def run_floor(
    sandbox: Sandbox,
    settings: Settings,
    workdir: Path,
    *,
    alarms: int,
    seconds: float,
    phones: int = 20,
) -> AlarmScaleResult:
    """The floor of :func:`run`: the same departments' pages, at the same intervals, to
    the same phones, with the same prompts, through the production ``Pager`` on an AMI
    connection of its own, and nothing else: no PostgreSQL, no alarm rows, no page lock,
    no history, no lamps, no notifications, no journal. What its phones hear late is
    Asterisk's and SIPp's part of the gap on this machine, measured the same way
    (:func:`measure_at_phones`); run after :func:`run`, whose prompt keeper rendered the
    pieces it plays. A "deactivation" stops the department's loop and cancels its page
    in progress (``Pager.cancel``), as the service does."""
    phone_numbers = list(PAGING_PHONES)[: min(phones, 2 * alarms)]
    result = AlarmScaleResult(alarms, seconds, len(phone_numbers))
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        sipps = await start_phones(stack, sandbox, phone_numbers, workdir)
        ami = await stack.enter_async_context(AmiClient.from_settings(settings.ami))
        tts = await stack.enter_async_context(TextToSpeech(settings.tts))
        pager = Pager(ami, settings.alarm)
        floor: list[_FloorAlarm] = []
        for index in range(alarms):
            name, trigger = department_name(index), trigger_of(index)
            prompts = AnnouncementPrompts(
                tts,
                announcement_segments(settings.alarm.announcement, name, trigger),
                fallback_announcement(trigger),
            )
            floor.append(
                _FloorAlarm(
                    index,
                    pager,
                    [f"PJSIP/{phone}" for phone in phones_of(index, phone_numbers)],
                    await prompts.get(),
                )
            )
        started_wall = time.time()
        tasks = [asyncio.create_task(alarm.run()) for alarm in floor]
        await asyncio.sleep(seconds)
        deactivated_at: dict[str, float] = {}
        started = time.perf_counter()
        for alarm, task in zip(floor, tasks, strict=True):
            alarm.stopping.set()
            await pager.cancel(alarm.index + 1)
            await task
            deactivated_at[caller_of(alarm.index)] = time.time()
        result.deactivation_seconds = time.perf_counter() - started
        result.cycles_counted = sum(len(alarm.sent) for alarm in floor)
        for alarm in floor:
            interval = interval_of(alarm.index)
            result.server_gap_errors += [
                abs(after - before - interval) / interval
                for before, after in itertools.pairwise(alarm.sent)
            ]
        await asyncio.sleep(QUIET_SECONDS)
    measure_at_phones(result, sipps, deactivated_at, started_wall)
    return result


def floor_lines(floor: AlarmScaleResult, ours: AlarmScaleResult) -> list[str]:
    """The floor's figures, and ours against it."""
    _, floor_sent, _ = p50_p95_max(floor.server_gap_errors)
    _, ours_sent, _ = p50_p95_max(ours.server_gap_errors)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    return [
        f"floor (the same pages through the Pager alone, no server around it):"
        f" {floor.pages} pages, {floor.cycles_counted} sent; load average"
        f" {' '.join(f'{n:.2f}' for n in floor.load)}",
        f"  gap error at the phones: p95 {floor.gap_error_p95 * 100:.2f} %, max"
        f" {floor.gap_error_max * 100:.2f} % over"
        f" {len(floor.gaps)} gaps; as sent: p95 {floor_sent * 100:.2f} %; missed"
        f" {floor.missed}, doubled {floor.doubled}; first page at the phones p95"
        f" {floor.first_page[1]:.2f} s; deactivating all {floor.deactivation_seconds:.2f} s;"
        f" INVITEs after a deactivation: {floor.invites_after_deactivation}",
        f"ours/floor, this run: gap error p95 at the phones"
        f" {ratio(ours.gap_error_p95, floor.gap_error_p95)},"
        f" as sent {ratio(ours_sent, floor_sent)},"
        f" first page p95 {ratio(ours.first_page[1], floor.first_page[1])}",
    ]


def measure_at_phones(
    result: AlarmScaleResult,
    phones: Sequence[PagingPhone],
    deactivated_at: dict[str, float],
    started_wall: float,
) -> None:
    """What the phones' SIPp logs say, per department: its gaps against its interval,
    cycles missed or doubled, INVITEs after its deactivation (``deactivated_at``, by
    caller name), its first page after the burst began (``started_wall``)."""
    result.load = os.getloadavg()
    starts = page_starts(phones)
    result.first_page = p50_p95_max([times[0] - started_wall for times in starts.values() if times])
    for index in range(result.alarms):
        name = caller_of(index)
        times = starts.get(name, [])
        result.pages += len(times)
        interval = interval_of(index)
        late = [t for t in times if t > deactivated_at[name]]
        result.invites_after_deactivation += len(late)
        kept = [t for t in times if t <= deactivated_at[name]]
        for before, after in itertools.pairwise(kept):
            gap = after - before
            at = after - started_wall
            result.gaps.append(Gap(index, at, interval, gap))
            if gap > MISSED * interval:
                result.missed += 1
            elif gap < DOUBLED * interval:
                result.doubled += 1
        if not times:
            result.missed += 1


def plot(result: AlarmScaleResult, path: Path, floor: AlarmScaleResult | None = None) -> None:
    """Gap error over time, one dot per gap, with the 2 % goal; the floor's beside ours
    when given."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4), dpi=100)
    runs = [("ours", result, "tab:blue")] + ([("floor", floor, "tab:orange")] if floor else [])
    for label, run, colour in runs:
        axes.scatter(
            [gap.at for gap in run.gaps],
            [gap.error * 100 for gap in run.gaps],
            s=6,
            color=colour,
            label=f"{label}: p95 {run.gap_error_p95 * 100:.2f} %",
        )
        axes.axhline(run.gap_error_p95 * 100, color=colour, linestyle="--", linewidth=1)
    axes.axhline(2.0, color="red", linewidth=1, label="goal: p95 < 2 %")
    axes.set_xlabel("seconds since the activations")
    axes.set_ylabel("|gap - interval| / interval (%)")
    axes.set_title(f"{result.alarms} alarms at once, intervals 10-30 s, {result.phones} phones")
    axes.legend(loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
