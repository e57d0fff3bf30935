"""Alarm latency through the sandbox (issue 12, part 3): activation -> first paging INVITE
at the phones, warm (a department whose announcement was rendered at start-up; every
trial from an extension never heard before, which was cold on main: its text was rendered
at activation) and cold (a department created a moment before, through the admin functions
and their NOTIFY, as the CLI and the web console make it); and deactivation -> the page's
last leg hung up (BYE at both phones), by the phone's path (``AlarmService.deactivate``, what
``*556`` calls) and the CLI's (``fastagi.admin.alarms.deactivate_alarm``: PostgreSQL, then
the server hears of it), with the INVITEs that arrived after a deactivation returned.

Timed from the ``activate()`` call, which the panic flow makes as soon as it has read the
confirming key: the DTMF's way through Asterisk to the AGI reply is not in it (the calls
bench measures the AGI turnaround). The cold/warm ratio is of trials of the same run.
Driven by tests/e2e/test_alarm_latency.py (its fixtures start the sandbox and PostgreSQL):
``make bench-latency`` (BENCH_TRIALS=20).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.calls import KINDS
from bench.stats import percentile
from bench.storm import StormResult, run_storm
from fastagi.admin import departments, paging
from fastagi.admin.alarms import deactivate_alarm
from fastagi.agi.server import AgiServer
from fastagi.app import GC_YOUNG_THRESHOLD, build_routes, running_services
from fastagi.config import Settings
from fastagi.domain.directory import Directory
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.sipp import PagingPhone

PHONES = (296, 297)
WARM = "Latency warm"


# How long the background storm runs at its rate before the first trial.
STORM_RAMP_SECONDS = 3.0


def maps(trigger: str, directory: Directory) -> bool:
    return directory.department_for(trigger) is not None


@dataclass
class LatencyResult:
    trials: int
    warm: list[float] = field(default_factory=list)  # activation -> first INVITE, s
    cold: list[float] = field(default_factory=list)
    stop_phone: list[float] = field(default_factory=list)  # deactivation -> last BYE, s
    stop_cli: list[float] = field(default_factory=list)
    invites_after_deactivation: int = 0
    renders_on_activation: int = 0  # renders started between activation and INVITE
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Collections of the oldest generation while the trials ran (a full collection of
    # this process, pytest's heap included, is the longest pause a trial can meet).
    full_collections: int = 0
    gc_mode: str = "default"
    # The probe route's SIPp storm in the background (0: idle), and what it did.
    background_rate: float = 0.0
    background: str = ""

    def lines(self) -> list[str]:
        def ms(values: list[float]) -> str:
            return (
                f"p50 {percentile(values, 0.5) * 1000:.0f} ms,"
                f" p95 {percentile(values, 0.95) * 1000:.0f} ms (n={len(values)})"
            )

        ratio = percentile(self.cold, 0.95) / max(percentile(self.warm, 0.95), 1e-9)
        load = " ".join(f"{n:.2f}" for n in self.load)
        return [
            f"alarm latency through the sandbox, {self.background or 'idle'}; load average {load}",
            f"  activation -> first INVITE, warm: {ms(self.warm)}",
            f"  activation -> first INVITE, cold (department created just before):"
            f" {ms(self.cold)}; p95 cold/warm {ratio:.2f}x;"
            f" renders on the way: {self.renders_on_activation}",
            f"  deactivation -> last leg hung up, phone path: {ms(self.stop_phone)};"
            f" CLI path: {ms(self.stop_cli)}",
            f"  INVITEs after a deactivation returned: {self.invites_after_deactivation}",
            f"  every trial, activation -> first INVITE (ms), warm: {_sorted_ms(self.warm)};"
            f" cold: {_sorted_ms(self.cold)}",
            f"  garbage collector: {self.gc_mode}; full collections meanwhile:"
            f" {self.full_collections}",
        ]


def _sorted_ms(values: Sequence[float]) -> str:
    return " ".join(f"{v * 1000:.0f}" for v in sorted(values))


@contextlib.contextmanager
def _collector(mode: str) -> Iterator[None]:
    """``tuned``: the collector as ``fastagi serve`` sets it (fastagi.app.tune_gc: what
    exists now frozen out of collections, a young threshold of GC_YOUNG_THRESHOLD), here
    over pytest's whole heap, undone afterwards; ``default``: CPython's own."""
    if mode != "tuned":
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def run(
    sandbox: Sandbox,
    settings: Settings,
    store: Stores,
    workdir: Path,
    *,
    trials: int,
    background_rate: float = 0.0,
) -> LatencyResult:
    """``background_rate``: probe calls (``*599``, bench.calls' storm) per second placed
    through the sandbox for as long as the trials run, as issue 12 asks for the latency
    "while the probe route runs at 100 calls/s"; 0 for an idle machine."""
    result = LatencyResult(trials, background_rate=background_rate)
    await paging.add_paging_group(store, WARM, by="bench")
    for phone in PHONES:
        await paging.add_paging_device(store, WARM, f"PJSIP/{phone}", by="bench")
    await departments.add_department(
        store, WARM, interval_seconds=60, paging_group=WARM, by="bench"
    )
    await departments.map_extensions(store, WARM, "71000-71999", by="bench")
    run_id = uuid.uuid4().hex[:6]
    async with contextlib.AsyncExitStack() as stack:
        phones = [await stack.enter_async_context(PagingPhone(sandbox, n, workdir)) for n in PHONES]
        services = await stack.enter_async_context(running_services(settings))
        keeper = services.prompt_keeper
        await keeper.wait_prepared(lambda d: d.department_for("71000") is not None)
        result.gc_mode = os.environ.get("BENCH_GC", "default")
        stack.enter_context(_collector(result.gc_mode))
        full_before = gc.get_stats()[2]["collections"]
        storm_task: asyncio.Task[StormResult] | None = None
        storm_started = time.monotonic()
        if background_rate > 0:
            # The probe calls need the FastAGI listener, which running_services leaves
            # to its caller (fastagi.app.running_server).
            listener = AgiServer(
                settings.agi, build_routes(services, settings), stats=services.agi_stats
            )
            await listener.start()
            stack.push_async_callback(listener.close, settings.agi.shutdown_grace)
            # Long enough for every trial even when the storm slows them; it ends by
            # itself (SIPp places its calls and exits), and the report says whether the
            # trials ran inside it.
            storm_task = asyncio.create_task(
                asyncio.to_thread(
                    run_storm,
                    KINDS["probe"],
                    sip_port=sandbox.sip_port,
                    local_port=sandbox.caller_port(),
                    rate=background_rate,
                    calls=int(background_rate * (STORM_RAMP_SECONDS + 2.0 * trials + 10)),
                    workdir=workdir / "storm",
                )
            )
            await asyncio.sleep(STORM_RAMP_SECONDS)
        trials_started = time.monotonic()
        stopped_at: list[float] = []
        activated_at: list[float] = []

        async def page_and_stop(trigger: str, directory: Directory, latencies: list[float]) -> None:
            invites = len(phones[0].received("INVITE "))
            byes = [len(phone.received("BYE")) for phone in phones]
            renders = services.tts.renders_started
            started = time.time()
            activated_at.append(started)
            activation = await services.alarms.activate(
                trigger, directory.department_for(trigger), uniqueid=f"latency-{trigger}"
            )
            [*_, first] = await phones[0].wait_invites(invites + 1, within=15)
            latencies.append(first.timestamp() - started)
            result.renders_on_activation += services.tts.renders_started - renders
            by_cli = len(result.stop_phone) > len(result.stop_cli)
            stopping = time.time()
            if by_cli:
                await deactivate_alarm(store, activation.alarm.id, reason="over", by="bench")
            else:
                await services.alarms.deactivate(activation.alarm.id, by="bench", reason="over")
            stopped_at.append(time.time())
            last = 0.0
            for phone, count in zip(phones, byes, strict=True):
                hangups = await phone.wait("BYE", count + 1, within=15)
                last = max(last, hangups[-1].timestamp())
            (result.stop_cli if by_cli else result.stop_phone).append(last - stopping)

        for trial in range(trials):
            warm = await keeper.wait_prepared(lambda d: True)
            await page_and_stop(f"71{trial:03d}", warm, result.warm)
            name = f"Latency cold {run_id} {trial}"
            trigger = f"72{trial:03d}"
            await paging.add_paging_group(store, name, by="bench")
            for phone in PHONES:
                await paging.add_paging_device(store, name, f"PJSIP/{phone}", by="bench")
            await departments.add_department(
                store, name, interval_seconds=60, paging_group=name, by="bench"
            )
            await departments.map_extensions(store, name, trigger, by="bench")
            cold = await keeper.wait_prepared(functools.partial(maps, trigger))
            await page_and_stop(trigger, cold, result.cold)
        result.full_collections = gc.get_stats()[2]["collections"] - full_before
        if storm_task is not None:
            trials_ended = time.monotonic() - storm_started
            storm = await storm_task
            inside = "inside it" if trials_ended <= storm.elapsed else "NOT all inside it"
            result.background = (
                f"{background_rate:g} probe calls/s in the background ({storm.calls} calls"
                f" in {storm.elapsed:.0f} s, {storm.failed} failed; the trials ran"
                f" {trials_started - storm_started:.0f}-{trials_ended:.0f} s, {inside})"
            )
        await asyncio.sleep(2.0)  # a stray INVITE would come within the dial's milliseconds
    # No INVITE between a trial's deactivation and the next trial's activation.
    invite_times = [m.time.timestamp() for phone in phones for m in phone.received("INVITE ")]
    for stopped, next_activation in zip(stopped_at, [*activated_at[1:], float("inf")], strict=True):
        result.invites_after_deactivation += sum(
            stopped < moment < next_activation for moment in invite_times
        )
    result.load = os.getloadavg()
    return result
