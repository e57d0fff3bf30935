"""FastAGI load benchmark: our server against panoramisk 1.4, in the same run.

``python -m bench.agi_load`` (what ``make bench`` runs) starts each server in its own child
process on uvloop, pinned to its own core when there are two, and drives it from this
process (also uvloop, on the other core) with ``bench.fake_asterisk`` at concurrency 1, 50
and 500. Both servers run the same six-command flow on the same route (``bench``, no query
string: panoramisk cannot route one), so the ratios compare like with like.

Every server process gets the same settings: the listen backlog, the open-files limit, the
core it is pinned to, and the garbage collector's settings (``--gc``). The whole run is
repeated (``--repeats``), every server started afresh each time, and each figure is the
median with the range of the repetitions; the comparison is the ratio of each server to
the baseline, repetition by repetition (``bench.stats``), never an absolute number, which
says more about the machine than about the server.

``--servers ours,ours@REF --baseline ours`` compares our server with itself as of a git
commit: the A/B of a change, on the whole call.

Child protocol (``--serve NAME``): the child prints ``LISTENING <port>``; each ``STATS`` line
on its stdin is answered with ``STATS <json>`` (flows completed / failed so far, CPU time,
peak RSS); EOF on its stdin makes it close the server and exit.

Exit status: 0 when every session of every run succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from bench import panoramisk_app, revisions
from bench.fake_asterisk import DEFAULT_SCRIPT_NAME, LoadResult, run_load
from bench.panoramisk_app import FlowStats
from bench.stats import Spread, paired_ratios

if TYPE_CHECKING:
    from fastagi.agi.session import AgiSession

SERVERS = ("panoramisk", "ours", "floor")
BASELINE, CANDIDATE, FLOOR = SERVERS
# The listen backlog, the same for every server: AgiServer's own, given to the others too.
BACKLOG = 1024
CONCURRENCIES = (1, 50, 500)
REPEATS = 5
DURATION = 1.0
MIN_SESSIONS = 10_000
WARMUP_SESSIONS = 100
# The collector's settings, the same in every server process. By default what `fastagi
# serve` runs with (fastagi.app.tune_gc): ours is measured as deployed, and since the
# settings are the interpreter's, not server code, the baseline gets them too (measured,
# they cut CPU per call for both, peak RSS unchanged). --gc default: CPython's own for all.
GC_MODES = ("default", "tuned")
GC_MODE = "tuned"
# fastagi.app.GC_YOUNG_THRESHOLD, for --gc tuned (a unit test keeps the two equal).
GC_YOUNG_THRESHOLD = 10_000
FD_LIMIT_WANTED = 65536
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the server side (runs in the child) --------------------------------------------------


class FlowError(Exception):
    """The server-side flow got a reply it did not expect."""


def _ours_flow(stats: FlowStats) -> Callable[[AgiSession], Awaitable[None]]:
    async def bench_flow(session: AgiSession) -> None:
        try:
            await session.answer()
            caller = await session.get_variable("CALLERID(num)")
            if not caller:
                raise FlowError("no caller id")
            await session.stream_file("beep")
            data = await session.get_data("prompt", timeout_ms=3000, max_digits=4)
            await session.set_variable("RESULT", data.digits)
            await session.hangup()
        except BaseException:
            stats.failed += 1
            raise
        stats.completed += 1

    return bench_flow


@contextlib.asynccontextmanager
async def _serve_ours(host: str, stats: FlowStats) -> Any:
    from fastagi.agi.server import AgiServer
    from fastagi.config import AgiSettings

    # Fair settings: loopback, a free port, a session cap far above the load (500 + slack).
    settings = AgiSettings(host=host, port=0, max_sessions=10_000, listen_backlog=BACKLOG)
    server = AgiServer(settings, {DEFAULT_SCRIPT_NAME: _ours_flow(stats)})
    await server.start()
    try:
        yield server.port
    finally:
        await server.close(grace=2.0)


@contextlib.asynccontextmanager
async def _serve_panoramisk(host: str, stats: FlowStats) -> Any:
    server = await panoramisk_app.start(host, 0, stats, backlog=BACKLOG)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


class _FloorProtocol(asyncio.Protocol):
    """The cheapest server Python can be: fixed command bytes, replies only framed.

    Not a FastAGI server; it measures what the driver and the kernel cost on their own.
    """

    COMMANDS = (
        b"ANSWER\n",
        b'GET VARIABLE "CALLERID(num)"\n',
        b'STREAM FILE beep ""\n',
        b"GET DATA prompt 3000 4\n",
        b"SET VARIABLE RESULT 1234\n",
        b"HANGUP\n",
    )

    def __init__(self, stats: FlowStats) -> None:
        self._stats = stats
        self._buffer = b""
        self._step = -1  # -1: reading the environment
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        if self._step < 0 and b"\n\n" not in self._buffer:
            return
        if self._step >= 0 and not self._buffer.endswith(b"\n"):
            return
        self._buffer = b""
        self._step += 1
        if self._step < len(self.COMMANDS):
            self._transport.write(self.COMMANDS[self._step])
        else:
            self._stats.completed += 1
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._step < len(self.COMMANDS):
            self._stats.failed += 1


@contextlib.asynccontextmanager
async def _serve_floor(host: str, stats: FlowStats) -> Any:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FloorProtocol(stats), host, 0, backlog=BACKLOG)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def _stats_line(stats: FlowStats) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        **stats.__dict__,
        "cpu_s": time.process_time(),  # user + system, finer than os.times() and its ticks
        "peak_rss_kib": usage.ru_maxrss,  # KiB on Linux
    }
    return f"STATS {json.dumps(figures)}"


_SERVE = {CANDIDATE: _serve_ours, BASELINE: _serve_panoramisk, FLOOR: _serve_floor}


async def _child_main(name: str, host: str) -> int:
    stats = FlowStats()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with _SERVE[name](host, stats) as port:
        print(f"LISTENING {port}", flush=True)
        while line := await reader.readline():
            if line.strip() == b"STATS":
                print(_stats_line(stats), flush=True)
    print(_stats_line(stats), flush=True)
    return 0


def set_gc(mode: str) -> None:
    """The collector's settings for a server process: the same whichever server it runs.

    ``default`` leaves CPython's own; ``tuned`` is what ``fastagi.app.tune_gc`` does in
    production (everything imported so far frozen out of collections, a young threshold
    of ``GC_YOUNG_THRESHOLD``), without importing the application into every process.
    """
    if mode == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve_main(name: str, host: str, cpu: int | None, gc_mode: str) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(levelname)s %(message)s")
    raise_fd_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if name == CANDIDATE:
        # Imported before the collector is set, as `fastagi serve` imports its modules.
        importlib.import_module("fastagi.agi.server")
    set_gc(gc_mode)
    return _run(_child_main(name, host))


# --- the driver side (this process) ---------------------------------------------------------


def _run(coro: Awaitable[int]) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def parse_server(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``ours@REF`` (our server as of git ``REF``): the name and the ref."""
    return revisions.parse_server(spec, SERVERS)


def export_fastagi(ref: str, into: Path) -> str:
    """Unpack ``fastagi/`` as of git ``ref`` under ``into``; return the commit's short hash."""
    return revisions.export_tree(ref, into, ("fastagi",))


@dataclass(frozen=True)
class ChildStats:
    completed: int
    failed: int
    cpu_s: float  # user + system CPU time of the server process so far
    peak_rss_kib: int  # its peak resident set so far


class ChildServer:
    """A server under test in its own process.

    ``tree``: a directory holding another ``fastagi`` package to import instead of this
    checkout's (the bench's own code still comes from this checkout).
    """

    def __init__(
        self, name: str, host: str, cpu: int | None, gc_mode: str, tree: Path | None = None
    ) -> None:
        cmd = [sys.executable, "-m", "bench.agi_load", "--serve", name, "--host", host]
        cmd += ["--gc", gc_mode]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        env = None
        if tree is not None:
            # `python -m` puts the working directory first on sys.path: fastagi from the
            # tree, bench from PYTHONPATH.
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.name = name
        self.proc = subprocess.Popen(
            cmd,
            cwd=tree or REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._expect("LISTENING", START_TIMEOUT))

    def _expect(self, tag: str, timeout: float) -> str:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else ""
        if not line.startswith(tag + " "):
            self.stop()
            raise RuntimeError(
                f"{self.name} server: expected {tag!r}, got {line!r} (exit {self.proc.poll()})"
            )
        return line[len(tag) + 1 :].strip()

    def stats(self) -> ChildStats:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write("STATS\n")
        stdin.flush()
        return ChildStats(**json.loads(self._expect("STATS", 10.0)))

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Plan:
    servers: tuple[str, ...]  # NAME or ours@REF; the baseline among them
    baseline: str
    concurrencies: tuple[int, ...]
    repeats: int
    duration: float
    min_sessions: int
    warmup_sessions: int
    pin: bool
    gc: str

    def max_sessions(self, concurrency: int) -> int:
        return max(self.min_sessions, 10 * concurrency)


# What is summarised per server and level, and compared with the baseline:
# (key in a row, column title, format of one number).
METRICS = (
    ("server_cpu_us_per_session", "CPU us/call", ".0f"),
    ("sessions_per_cpu_s", "calls/CPU-s", ".0f"),
    ("command_p50_ms", "cmd p50 ms", ".3f"),
    ("command_p99_ms", "cmd p99 ms", ".2f"),
    ("peak_rss_mib", "peak RSS MiB", ".1f"),
    ("sessions_per_s", "calls/s", ".0f"),
)


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per repetition
    failures: list[str] = field(default_factory=list)  # servers that did not run at all
    commits: dict[str, str] = field(default_factory=dict)  # ours@REF -> the commit it ran
    # Per server and level: each metric's Spread over the repetitions.
    summary: list[dict[str, Any]] = field(default_factory=list)
    # Per other server and level: each metric's paired ratio to the baseline, as a Spread.
    ratios: list[dict[str, Any]] = field(default_factory=list)
    # Per level: ours against panoramisk and against the floor, in calls per CPU-second.
    goals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        counted = sum(int(r["errors"]) + int(r["server_failures"]) for r in self.rows)
        return counted + len(self.failures)


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpus(pin: bool) -> tuple[int | None, int | None]:
    """(driver cpu, server cpu): one core each when there are at least two."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def run_plan(plan: Plan, host: str = "127.0.0.1") -> Report:
    """Every server at every level, ``plan.repeats`` times over.

    Each repetition starts every server afresh and runs each level on every server in
    turn, in an order rotated each time, so that a slow patch of a shared machine falls on
    all of them rather than on whichever ran last.
    """
    import uvloop

    report = Report()
    raise_fd_limit()
    driver_cpu, server_cpu = _cpus(plan.pin)
    with (
        tempfile.TemporaryDirectory(prefix="agi-bench-") as scratch,
        _pinned(driver_cpu),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):

        def drive(port: int, concurrency: int, max_sessions: int, duration: float) -> LoadResult:
            return runner.run(
                run_load(
                    host,
                    port,
                    concurrency=concurrency,
                    max_sessions=max_sessions,
                    duration=duration,
                )
            )

        trees: dict[str, Path] = {}
        for spec in plan.servers:
            _, ref = parse_server(spec)
            if ref is not None:
                trees[spec] = Path(scratch, str(len(trees)))
                report.commits[spec] = export_fastagi(ref, trees[spec])

        for repeat in range(plan.repeats):
            shift = repeat % len(plan.servers)
            order = plan.servers[shift:] + plan.servers[:shift]
            children: dict[str, ChildServer] = {}
            try:
                for spec in order:
                    name, _ = parse_server(spec)
                    try:
                        children[spec] = ChildServer(
                            name, host, server_cpu, plan.gc, trees.get(spec)
                        )
                        if plan.warmup_sessions:
                            port, warmup = children[spec].port, plan.warmup_sessions
                            warm = drive(port, min(10, warmup), warmup, 5)
                            if warm.errors:
                                samples = warm.summary()["error_samples"]
                                report.failures.append(f"{spec} warm-up: {samples}")
                    except (RuntimeError, OSError) as exc:
                        report.failures.append(f"{spec}: {exc}")
                        children.pop(spec, None)
                for concurrency in plan.concurrencies:
                    # The servers one after the other at each level, so that the rows a
                    # ratio pairs ran seconds apart.
                    for spec, child in list(children.items()):
                        try:
                            before = child.stats()
                            result = drive(
                                child.port,
                                concurrency,
                                plan.max_sessions(concurrency),
                                plan.duration,
                            )
                            after = child.stats()
                        except (RuntimeError, OSError) as exc:
                            report.failures.append(f"{spec}: {exc}")
                            del children[spec]
                            child.stop()
                            continue
                        report.rows.append(_row(spec, repeat, result, before, after))
            finally:
                for child in children.values():
                    child.stop()
    _summarise(plan, report)
    return report


def _row(
    server: str, repeat: int, result: LoadResult, before: ChildStats, after: ChildStats
) -> dict[str, Any]:
    row = {"server": server, "repeat": repeat, **result.summary()}
    row["server_failures"] = after.failed - before.failed
    cpu = after.cpu_s - before.cpu_s
    row["server_cpu_pct"] = round(100 * cpu / result.elapsed, 1)
    row["server_cpu_us_per_session"] = (
        round(1e6 * cpu / result.sessions, 1) if result.sessions else None
    )
    # The goals' figure (issue 12): calls served per second of the server's CPU.
    row["sessions_per_cpu_s"] = round(result.sessions / cpu) if cpu > 0 else None
    # The peak so far: the levels run in the order given, by default the highest last.
    row["peak_rss_mib"] = round(after.peak_rss_kib / 1024, 1)
    return row


def _series(report: Report, server: str, concurrency: int, key: str) -> list[float | None]:
    """One metric of one server at one level, by repetition (None where it did not run)."""
    by_repeat = {
        r["repeat"]: r.get(key)
        for r in report.rows
        if r["server"] == server and r["concurrency"] == concurrency
    }
    repeats = max((r["repeat"] for r in report.rows), default=-1) + 1
    return [by_repeat.get(i) for i in range(repeats)]


def _summarise(plan: Plan, report: Report) -> None:
    for concurrency in plan.concurrencies:
        for server in plan.servers:
            spreads = {
                key: Spread.of(
                    [v for v in _series(report, server, concurrency, key) if v is not None]
                )
                for key, _, _ in METRICS
            }
            if spreads["sessions_per_s"] is None:
                continue
            errors = sum(
                int(r["errors"]) + int(r["server_failures"])
                for r in report.rows
                if r["server"] == server and r["concurrency"] == concurrency
            )
            report.summary.append(
                {"server": server, "concurrency": concurrency, "errors": errors, **spreads}
            )
            if server == plan.baseline:
                continue
            ratios = {
                key: Spread.of(
                    paired_ratios(
                        _series(report, server, concurrency, key),
                        _series(report, plan.baseline, concurrency, key),
                    )
                )
                for key, _, _ in METRICS
            }
            if any(ratios.values()):
                report.ratios.append({"server": server, "concurrency": concurrency, **ratios})
        if CANDIDATE in plan.servers:

            def per_cpu(other: str, level: int = concurrency) -> Spread | None:
                return Spread.of(
                    paired_ratios(
                        _series(report, CANDIDATE, level, "sessions_per_cpu_s"),
                        _series(report, other, level, "sessions_per_cpu_s"),
                    )
                )

            report.goals.append(
                {
                    "concurrency": concurrency,
                    "vs_panoramisk": per_cpu(BASELINE) if BASELINE in plan.servers else None,
                    "vs_floor": per_cpu(FLOOR) if FLOOR in plan.servers else None,
                }
            )


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    lines = [
        "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return lines


def _cell(spread: Spread | None, spec: str) -> str:
    return "n/a" if spread is None else spread.format(spec)


def _ratio_cell(spread: Spread | None) -> str:
    # Marked when every repetition falls on the same side of 1: a difference beyond the
    # spread of the run.
    if spread is None:
        return "n/a"
    return spread.format(".2f") + (" *" if spread.excludes(1.0) else "  ")


def format_report(plan: Plan, report: Report) -> str:
    lines: list[str] = []
    if report.summary:
        header = ["server", "conc", *(title for _, title, _ in METRICS), "errors"]
        body = [
            [
                s["server"],
                str(s["concurrency"]),
                *(_cell(s[key], spec) for key, _, spec in METRICS),
                str(s["errors"]),
            ]
            for s in report.summary
        ]
        lines += _table(header, body)
    if report.ratios:
        lines += [
            "",
            f"ratios to {plan.baseline}, repetition by repetition (below 1: less; * every "
            "repetition on the same side of 1):",
        ]
        header = ["server", "conc", *(title for _, title, _ in METRICS)]
        body = [
            [
                f"{r['server']}/{plan.baseline}",
                str(r["concurrency"]),
                *(_ratio_cell(r[key]) for key, _, _ in METRICS),
            ]
            for r in report.ratios
        ]
        lines += _table(header, body)
    if any(g["vs_panoramisk"] or g["vs_floor"] for g in report.goals):
        lines += [
            "",
            "ours in calls per CPU-second, repetition by repetition (goals: >= 2x "
            "panoramisk's; >= 1/1.5 = 0.67x the floor's, i.e. at most 1.5x its CPU per call):",
        ]
        header = ["conc", "ours/panoramisk", "ours/floor"]
        body = [
            [str(g["concurrency"]), _ratio_cell(g["vs_panoramisk"]), _ratio_cell(g["vs_floor"])]
            for g in report.goals
        ]
        lines += _table(header, body)
    lines += [
        "",
        f"median (min-max) of {plan.repeats} repetitions, each server started afresh every "
        f"repetition; up to max({plan.min_sessions}, 10 x concurrency) calls or "
        f"{plan.duration:g} s per level; every server in its own process on uvloop, "
        f"listen backlog {BACKLOG}, garbage collector: {plan.gc}",
        "a call = one FastAGI session of six commands; cmd = server turnaround per command; "
        "CPU = the server process's user+system time per completed call; peak RSS = the "
        "server process's so far",
    ]
    if FLOOR in plan.servers:
        lines.append("floor = a no-parsing asyncio.Protocol server (driver + kernel cost alone)")
    lines += [f"{spec} = commit {commit}" for spec, commit in report.commits.items()]
    for row in report.rows:
        for sample in row["error_samples"]:
            lines.append(f"error ({row['server']}, c={row['concurrency']}): {sample}")
    lines += [f"failed: {failure}" for failure in report.failures]
    return "\n".join(lines)


def _document(plan: Plan, report: Report) -> dict[str, Any]:
    def plain(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: asdict(v) if isinstance(v, Spread) else v for k, v in entry.items()}

    return {
        "plan": asdict(plan),
        "results": report.rows,
        "summary": [plain(s) for s in report.summary],
        "ratios": [plain(r) for r in report.ratios],
        "goals": [plain(g) for g in report.goals],
        "commits": report.commits,
        "failures": report.failures,
        "errors": report.errors,
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agi_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few calls at c=1 and c=5, twice")
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON (- = stdout)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated: panoramisk, ours, floor, or ours@REF, our server as of a git "
        "commit (default: the first three)",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help="the server the ratios divide by (default: %(default)s)",
    )
    parser.add_argument("--concurrency", help="comma-separated levels (default 1,50,500)")
    parser.add_argument("--repeats", type=int, help=f"repetitions (default {REPEATS})")
    parser.add_argument("--duration", type=float, help=f"seconds per level (default {DURATION:g})")
    parser.add_argument(
        "--gc",
        choices=GC_MODES,
        default=GC_MODE,
        help="garbage-collector settings of every server process (default: %(default)s)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin driver and server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.host, args.cpu, args.gc)
    out = out or sys.stdout
    servers = tuple(s for s in args.servers.split(",") if s)
    try:
        for spec in servers:
            parse_server(spec)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.baseline not in servers:
        print(f"the baseline {args.baseline!r} is not among --servers", file=sys.stderr)
        return 2
    default_levels = (1, 5) if args.quick else CONCURRENCIES
    plan = Plan(
        servers=servers,
        baseline=args.baseline,
        concurrencies=tuple(int(c) for c in args.concurrency.split(","))
        if args.concurrency
        else default_levels,
        repeats=args.repeats or (2 if args.quick else REPEATS),
        duration=args.duration or (2.0 if args.quick else DURATION),
        min_sessions=20 if args.quick else MIN_SESSIONS,
        warmup_sessions=5 if args.quick else WARMUP_SESSIONS,
        pin=not args.no_pin,
        gc=args.gc,
    )
    report = run_plan(plan, args.host)
    document = _document(plan, report)
    if args.json != "-":
        print(format_report(plan, report), file=out)
    if args.json == "-":
        json.dump(document, out, indent=2)
        print(file=out)
    elif args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
