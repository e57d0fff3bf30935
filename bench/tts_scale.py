"""TTS at scale (issue 12, part 5): what start-up renders for 500 departments, whether the
event loop (and so the FastAGI listener) stays responsive meanwhile, and how long an
announcement rendered on demand takes, idle and while the batch runs.

What is rendered is what fastagi/app.py ``PromptKeeper`` renders: the digit clips, then
each department's announcement piece and drill piece (clips), then its confirmation question,
through ``TextToSpeech.prerender`` (one child process per render, fastagi/tts/render.py),
into a fresh directory (nothing cached). Each batch size of parallel renders is measured in
the same run; the baseline is one render at a time.

    python -m bench.tts_scale [--departments 500] [--parallel 1,2,3] [--on-demand 20]
        [--meter-sample 20] [--heap-mb 70]

It runs as the server does (fastagi.app.run: uvloop, the same collector settings), grown to
a server's resident size first (``--heap-mb``), and prints this process's CPU per prompt and
the part of it on the event loop's thread.

Responsiveness: a TCP listener on loopback is connected to every 20 ms during the batch
(as Asterisk connects to the FastAGI port); the connect + one-line echo time is reported
with the event loop's lag. The load average is printed with the results.

The scheduled ``departments`` check (every ``[health] interval``, 10 s) measures every
department's announcement (fastagi/tts/announcement.py ``AnnouncementMeter``): after the
batch, the meter is timed over every department with the batch's directory as the site's
(what a running server's check does), and over the first ``--meter-sample`` departments
with an empty one (what it did before it read the site's pieces: it rendered them all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import fastagi.app
from bench.stats import percentile
from fastagi.config import AlarmSettings, DrillSettings, Settings
from fastagi.domain.rules import announcement_segments
from fastagi.flows import prompts
from fastagi.tts import TextToSpeech, TtsSettings
from fastagi.tts.announcement import (
    DIGIT_CLIPS,
    AnnouncementMeter,
    department_texts,
    render_segments,
)

PROBE_EVERY = 0.02
# `fastagi serve` in the sandbox, once it has served calls: about 70 MB resident.
HEAP_MB = 70
PAGE = os.sysconf("SC_PAGE_SIZE")


class Responsiveness:
    """Connects to a loopback echo listener every PROBE_EVERY s; records each round trip
    and how late each tick woke up (the event loop's lag)."""

    def __init__(self) -> None:
        self.round_trips: list[float] = []
        self.lags: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                due = loop.time() + PROBE_EVERY
                started = time.perf_counter()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"agi_network: yes\n")
                await reader.readline()
                writer.close()
                self.round_trips.append(time.perf_counter() - started)
                await asyncio.sleep(max(0.0, due - loop.time()))
                self.lags.append(max(0.0, loop.time() - due))
        finally:
            server.close()
            await server.wait_closed()


async def meter_seconds(directory: Path, names: Sequence[str], alarm: AlarmSettings) -> float:
    """How long an AnnouncementMeter with ``directory`` as the site's prompts takes to
    measure ``names`` (as the departments check does), and what it rendered."""
    settings = Settings.model_validate(
        {"tts": {"directory": directory}, "alarm": alarm.model_dump()}
    )
    meter = AnnouncementMeter(settings)
    try:
        begun = time.perf_counter()
        for name in names:
            if await meter.measure(name, ("201",)) is None:
                raise RuntimeError(f"the meter could not measure {name!r}")
        return time.perf_counter() - begun
    finally:
        await meter.close()


async def batch(
    departments: int,
    parallel: int,
    on_demand: int,
    alarm: AlarmSettings,
    drill: DrillSettings,
    *,
    meter_sample: int,
) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:6]
    names = [f"Department {run_id} {n}" for n in range(departments)]
    with tempfile.TemporaryDirectory(prefix="bench-tts-") as directory:
        # One slot more than the batch uses: the live call's (PromptKeeper's rule).
        settings = TtsSettings(directory=Path(directory), max_parallel_renders=parallel + 1)
        async with TextToSpeech(settings) as tts:
            # Announcement pieces are clips, as fastagi/app.py directory_prompts renders
            # them (and as pages play them); questions are whole texts.
            clips = [
                *DIGIT_CLIPS,
                *department_texts([alarm.announcement, drill.announcement], [*names, None]),
            ]
            texts = [prompts.panic_question(name) for name in names]
            probe = Responsiveness()
            stop = asyncio.Event()
            prober = asyncio.create_task(probe.run(stop))
            started = time.perf_counter()
            # This coroutine runs on the loop's thread: thread_time() is the loop's CPU.
            loop_cpu_started, cpu_started = time.thread_time(), time.process_time()
            work = asyncio.create_task(tts.prerender(texts, clips=clips, parallel=parallel))
            # Alarms of departments not yet rendered, during the batch: rendered on demand.
            during: list[float] = []
            for n in range(on_demand):
                if work.done():
                    break
                segments = announcement_segments(alarm.announcement, f"New {run_id} {n}", "201")
                begun = time.perf_counter()
                await render_segments(tts, segments)
                during.append(time.perf_counter() - begun)
            results = await work
            seconds = time.perf_counter() - started
            loop_cpu = time.thread_time() - loop_cpu_started
            process_cpu = time.process_time() - cpu_started
            stop.set()
            await prober
            failed = sum(isinstance(r, Exception) for r in results.values())
            idle: list[float] = []
            for n in range(on_demand):
                segments = announcement_segments(alarm.announcement, f"Idle {run_id} {n}", "201")
                begun = time.perf_counter()
                await render_segments(tts, segments)
                idle.append(time.perf_counter() - begun)
        site = await meter_seconds(Path(directory), names, alarm)
    sample = names[:meter_sample]
    with tempfile.TemporaryDirectory(prefix="bench-tts-empty-") as empty:
        scratch = await meter_seconds(Path(empty), sample, alarm) if sample else 0.0
    return {
        "meter_site_ms": site / len(names) * 1000 if names else 0.0,
        "meter_scratch_ms": scratch / len(sample) * 1000 if sample else 0.0,
        "renders": len(results),
        "failed": failed,
        "seconds": seconds,
        "loop_cpu_ms": loop_cpu / len(results) * 1000,
        "process_cpu_ms": process_cpu / len(results) * 1000,
        "per_render_ms": seconds / len(results) * 1000,
        "rtt_p99_ms": percentile(probe.round_trips, 0.99) * 1000,
        "rtt_max_ms": max(probe.round_trips, default=0.0) * 1000,
        "lag_p99_ms": percentile(probe.lags, 0.99) * 1000,
        "lag_max_ms": max(probe.lags, default=0.0) * 1000,
        "demand_idle_p95_ms": percentile(idle, 0.95) * 1000,
        "demand_idle_p50_ms": statistics.median(idle) * 1000 if idle else 0.0,
        "demand_busy_p95_ms": percentile(during, 0.95) * 1000,
        "demand_busy_n": len(during),
    }


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20


def _grow_heap(target_mb: int) -> list[bytearray]:
    """Memory written once (resident, as a server's heap is), until the RSS is about
    ``target_mb``."""
    heap = []
    for _ in range(max(0, round(target_mb - _rss_mb()))):
        block = bytearray(2**20)
        block[::PAGE] = b"\x01" * len(range(0, 2**20, PAGE))
        heap.append(block)
    return heap


async def run(args: argparse.Namespace) -> None:
    alarm, drill = AlarmSettings(), DrillSettings()
    rows = {}
    for parallel in args.parallel:
        rows[parallel] = await batch(
            args.departments, parallel, args.on_demand, alarm, drill, meter_sample=args.meter_sample
        )
        load = os.getloadavg()
        row = rows[parallel]
        print(
            f"parallel {parallel}: {row['renders']:.0f} prompts ({row['failed']:.0f} failed) for"
            f" {args.departments} departments in {row['seconds']:.1f} s"
            f" ({row['per_render_ms']:.0f} ms a prompt,"
            f" {rows[args.parallel[0]]['seconds'] / row['seconds']:.2f}x the speed of"
            f" parallel {args.parallel[0]});"
            f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(
            f"  this process's CPU (the server's share: starting and waiting for the"
            f" children) {row['process_cpu_ms']:.2f} ms a prompt, of it on the event loop's"
            f" thread {row['loop_cpu_ms']:.2f} ms; RSS {_rss_mb():.0f} MB"
        )
        print(
            f"  listener meanwhile: connect+echo p99 {row['rtt_p99_ms']:.1f} ms,"
            f" max {row['rtt_max_ms']:.1f} ms; event loop lag p99 {row['lag_p99_ms']:.1f} ms,"
            f" max {row['lag_max_ms']:.1f} ms"
        )
        print(
            f"  announcement on demand (a department not rendered yet): idle p50"
            f" {row['demand_idle_p50_ms']:.0f} ms, p95 {row['demand_idle_p95_ms']:.0f} ms;"
            f" during the batch p95 {row['demand_busy_p95_ms']:.0f} ms"
            f" ({row['demand_busy_n']:.0f} renders)"
        )
        site_total = row["meter_site_ms"] * args.departments / 1000
        scratch_total = row["meter_scratch_ms"] * args.departments / 1000
        print(
            f"  departments check's measurement of {args.departments} departments:"
            f" {site_total:.2f} s reading the site's pieces ({row['meter_site_ms']:.2f} ms"
            f" a department); rendering them instead {scratch_total:.1f} s"
            f" ({row['meter_scratch_ms']:.0f} ms a department, from"
            f" {min(args.meter_sample, args.departments)});"
            f" ratio {site_total / scratch_total if scratch_total else 0:.4f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--departments", type=int, default=500)
    parser.add_argument(
        "--parallel", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--on-demand", type=int, default=20)
    parser.add_argument("--meter-sample", type=int, default=20)
    parser.add_argument(
        "--heap-mb",
        type=int,
        default=HEAP_MB,
        help="grow this process to about this RSS first, as big as a running server"
        " (a child started with fork() costs its parent in proportion)",
    )
    args = parser.parse_args(argv)
    heap = _grow_heap(args.heap_mb)
    # The server's event loop and collector settings (uvloop when installed).
    fastagi.app.run(run(args))
    del heap
    return 0


if __name__ == "__main__":
    sys.exit(main())
