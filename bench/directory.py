"""Directory scale (issue 12, part 4): 10,000 extensions in 500 departments, written as
exact extensions, ranges and patterns; the lookup a trigger makes, the memory the
directory takes, and how long a reload takes (the CPU part of a change going live).

The directory is the pure object the server holds (fastagi/domain/directory.py), built
by the same ``Directory.build`` the store calls after its three SELECTs. The baseline,
measured in the same run, is a plain ``dict`` lookup of the same extensions: the floor of
any lookup in Python.

    python -m bench.directory [--departments 500] [--extensions 10000] [--lookups 20000]

The figures depend on this shared 2-core machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.stats import percentile
from fastagi.domain.directory import Department, Directory

# Each department owns 20 extensions: 5 exact, a range of 10, and a pattern of 5 (_NNN[0-4]
# within its own hundred), plus a catch-all pattern for a site-wide prefix.
EXACT_PER_DEPARTMENT = 5


@dataclass(frozen=True)
class Site:
    departments: list[Department]
    mappings: list[tuple[int, str]]
    extensions: list[str]  # every extension that belongs to a department


def build_site(departments: int, extensions: int) -> Site:
    per = extensions // departments
    if per < 20 or per % 20:
        raise SystemExit("--extensions must be a multiple of 20 per department")
    rows: list[Department] = []
    mappings: list[tuple[int, str]] = []
    owned: list[str] = []
    for index in range(departments):
        department_id = index + 1
        rows.append(Department(department_id, f"Department {index}", None, None))
        # A block of ``per`` five-digit extensions per department, from 20000 up.
        base = 20000 + index * per
        for block in range(0, per, 20):
            start = base + block
            for offset in range(EXACT_PER_DEPARTMENT):
                mappings.append((department_id, str(start + offset)))
            mappings.append((department_id, f"{start + 5}-{start + 14}"))
            # start + 15 .. start + 19 as a pattern when the block allows it, else a range
            last = start + 19
            if str(start + 15)[:-1] == str(last)[:-1] and str(start + 15)[-1] == "5":
                mappings.append((department_id, f"_{str(start)[:-1]}[5-9]"))
            else:
                mappings.append((department_id, f"{start + 15}-{last}"))
            owned += [str(n) for n in range(start, start + 20)]
    # Site-wide patterns: every other five-digit extension and any longer number go to the
    # last department (the most general mappings, that every lookup must still consider).
    mappings.append((departments, "_XXXXX"))
    mappings.append((departments, "_9."))
    return Site(rows, mappings, owned)


def time_each(function: object, extensions: Sequence[str]) -> list[float]:
    call = function  # a callable of one extension
    samples = []
    clock = time.perf_counter_ns
    for extension in extensions:
        started = clock()
        call(extension)  # type: ignore[operator]
        samples.append((clock() - started) / 1e6)
    return samples


async def _longest_stall(build: Callable[[], Awaitable[object]]) -> float:
    """The event loop's longest stall (seconds past a 1 ms tick) while ``build`` runs."""
    loop = asyncio.get_running_loop()
    stalls = [0.0]
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            stalls.append(loop.time() - before - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    try:
        await build()
    finally:
        done.set()
        await ticker
    return max(stalls)


def stalls(site: Site) -> tuple[float, float]:
    """The loop's longest stall during a reload's build: inline (as it was) and in a
    worker thread (as the store builds, fastagi/store/directory.py)."""

    async def inline() -> object:
        return Directory.build(site.departments, site.mappings)

    async def threaded() -> object:
        return await asyncio.to_thread(Directory.build, site.departments, site.mappings)

    async def both() -> tuple[float, float]:
        return (
            min([await _longest_stall(inline) for _ in range(3)]),
            min([await _longest_stall(threaded) for _ in range(3)]),
        )

    return asyncio.run(both())


def measure(args: argparse.Namespace) -> dict[str, float]:
    site = build_site(args.departments, args.extensions)
    builds = []
    for _ in range(3):
        started = time.perf_counter()
        Directory.build(site.departments, site.mappings)
        builds.append(time.perf_counter() - started)
    build_seconds = min(builds)
    stall_inline, stall_threaded = stalls(site)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    directory = Directory.build(site.departments, site.mappings)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    memory = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    chooser = random.Random(12)
    # Owned extensions, plus 10 % callers of no department and 10 % of the catch-all.
    triggers = [chooser.choice(site.extensions) for _ in range(args.lookups)]
    triggers += [str(chooser.randrange(100, 999)) for _ in range(args.lookups // 10)]
    triggers += [f"9{chooser.randrange(10**6)}" for _ in range(args.lookups // 10)]
    chooser.shuffle(triggers)
    floor = {extension: directory.department_for(extension) for extension in set(triggers)}
    gc.disable()
    try:
        ours = time_each(directory.department_for, triggers)
        baseline = time_each(floor.get, triggers)
    finally:
        gc.enable()
    # The answers are the ones a linear scan by specificity gives (the definition).
    for extension in chooser.sample(triggers, 200):
        matching = [m for m in directory.mappings if m.pattern.matches(extension)]
        want = (
            min(matching, key=lambda m: m.pattern.specificity(len(extension))) if matching else None
        )
        got = directory.lookup(extension)
        assert (got.pattern if got else None) == (want.pattern if want else None), extension
    return {
        "mappings": len(site.mappings),
        "lookup_p50_ms": statistics.median(ours),
        "lookup_p99_ms": percentile(ours, 0.99),
        "lookup_max_ms": max(ours),
        "dict_p99_ms": percentile(baseline, 0.99),
        "build_ms": build_seconds * 1000,
        "stall_inline_ms": stall_inline * 1000,
        "stall_threaded_ms": stall_threaded * 1000,
        "memory_mb": memory / 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--departments", type=int, default=500)
    parser.add_argument("--extensions", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args(argv)
    figures = measure(args)
    load = os.getloadavg()
    print(
        f"directory: {args.extensions} extensions in {args.departments} departments,"
        f" {figures['mappings']:.0f} mappings (exact, ranges, patterns);"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"  lookup per trigger: p50 {figures['lookup_p50_ms'] * 1000:.1f} us,"
        f" p99 {figures['lookup_p99_ms'] * 1000:.1f} us,"
        f" max {figures['lookup_max_ms'] * 1000:.1f} us"
        f" ({figures['lookup_p99_ms'] / figures['dict_p99_ms']:.1f}x a dict lookup's p99,"
        f" {figures['dict_p99_ms'] * 1000:.2f} us)"
    )
    print(
        f"  build (per reload, on top of the SELECTs): {figures['build_ms']:.1f} ms;"
        f" memory {figures['memory_mb']:.1f} MB"
    )
    print(
        f"  event loop's longest stall during a build: {figures['stall_threaded_ms']:.1f} ms"
        f" in a worker thread (as the store builds), {figures['stall_inline_ms']:.1f} ms"
        f" on the loop ({figures['stall_threaded_ms'] / figures['stall_inline_ms']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
