"""FastAGI load benchmark: our server against panoramisk 1.4, in the same run.

``python -m bench.agi_load`` (what ``make bench`` runs) starts each server in its own child
process on uvloop, pinned to its own core when there are two, and drives it from this
process (also uvloop, on the other core) with ``bench.fake_asterisk`` at concurrency 1, 50
and 500. Both servers run the same six-command flow on the same route (``bench``, no query
string: panoramisk cannot route one), so the ratios compare like with like.

Child protocol (``--serve NAME``): the child prints ``LISTENING <port>``; each ``STATS`` line
on its stdin is answered with ``STATS <json>`` (flows completed / failed so far); EOF on its
stdin makes it close the server and exit.

Exit status: 0 when every session of every run succeeded, 1 otherwise. Missing a target is
reported by a ``target missed`` line, not by the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import select
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from bench import panoramisk_app
from bench.fake_asterisk import DEFAULT_SCRIPT_NAME, LoadResult, run_load
from bench.panoramisk_app import FlowStats

if TYPE_CHECKING:
    from fastagi.agi.session import AgiSession

SERVERS = ("panoramisk", "ours", "floor")
BASELINE, CANDIDATE, FLOOR = SERVERS
# The listen backlog, the same for every server: AgiServer's own, given to the others too.
BACKLOG = 1024
CONCURRENCIES = (1, 50, 500)
DURATION = 5.0
MIN_SESSIONS = 10_000
TARGET_RATIO = 3.0  # ours / panoramisk sessions per second, at the highest concurrency
TARGET_P99_MS = 5.0  # our per-command turnaround, at every concurrency
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
    settings = AgiSettings(host=host, port=0, max_sessions=10_000)
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
    times = os.times()
    cpu = times.user + times.system
    return f"STATS {json.dumps({**stats.__dict__, 'cpu_s': cpu})}"


async def _child_main(name: str, host: str) -> int:
    stats = FlowStats()
    serve = {CANDIDATE: _serve_ours, BASELINE: _serve_panoramisk, FLOOR: _serve_floor}[name]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with serve(host, stats) as port:
        print(f"LISTENING {port}", flush=True)
        while line := await reader.readline():
            if line.strip() == b"STATS":
                print(_stats_line(stats), flush=True)
    print(_stats_line(stats), flush=True)
    return 0


def serve_main(name: str, host: str, cpu: int | None) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(levelname)s %(message)s")
    raise_fd_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if name == "ours":
        # What `fastagi serve` does at start-up (fastagi.app.run): ours as it runs.
        from fastagi.app import tune_gc

        tune_gc()
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


@dataclass(frozen=True)
class ChildStats:
    completed: int
    failed: int
    cpu_s: float  # user + system CPU time of the server process so far


class ChildServer:
    """A server under test in its own process."""

    def __init__(self, name: str, host: str, cpu: int | None) -> None:
        cmd = [sys.executable, "-m", "bench.agi_load", "--serve", name, "--host", host]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.name = name
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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
    servers: tuple[str, ...]
    concurrencies: tuple[int, ...]
    duration: float
    min_sessions: int
    warmup_sessions: int
    pin: bool

    def max_sessions(self, concurrency: int) -> int:
        return max(self.min_sessions, 10 * concurrency)


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # servers that did not run at all
    ratios: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

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
    import uvloop

    report = Report()
    raise_fd_limit()
    driver_cpu, server_cpu = _cpus(plan.pin)
    with (
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

        for name in plan.servers:
            try:
                child = ChildServer(name, host, server_cpu)
            except (RuntimeError, OSError) as exc:
                report.failures.append(f"{name}: {exc}")
                continue
            try:
                if plan.warmup_sessions:
                    warm = drive(child.port, min(10, plan.warmup_sessions), plan.warmup_sessions, 5)
                    if warm.errors:
                        report.failures.append(f"{name} warm-up: {warm.summary()['error_samples']}")
                for concurrency in plan.concurrencies:
                    before = child.stats()
                    result = drive(
                        child.port, concurrency, plan.max_sessions(concurrency), plan.duration
                    )
                    after = child.stats()
                    row = {"server": name, **result.summary()}
                    row["server_failures"] = after.failed - before.failed
                    cpu = after.cpu_s - before.cpu_s
                    row["server_cpu_pct"] = round(100 * cpu / result.elapsed, 1)
                    row["server_cpu_us_per_session"] = (
                        round(1e6 * cpu / result.sessions, 1) if result.sessions else None
                    )
                    report.rows.append(row)
            except (RuntimeError, OSError) as exc:
                report.failures.append(f"{name}: {exc}")
            finally:
                child.stop()
    _compare(plan, report)
    return report


def _row(report: Report, server: str, concurrency: int) -> dict[str, Any] | None:
    for row in report.rows:
        if row["server"] == server and row["concurrency"] == concurrency:
            return row
    return None


def _compare(plan: Plan, report: Report) -> None:
    for concurrency in plan.concurrencies:
        base, ours = _row(report, BASELINE, concurrency), _row(report, CANDIDATE, concurrency)
        if base is None or ours is None or not base["sessions_per_s"]:
            continue
        base_cpu, ours_cpu = base["server_cpu_us_per_session"], ours["server_cpu_us_per_session"]
        report.ratios.append(
            {
                "concurrency": concurrency,
                "sessions_per_s_ratio": round(ours["sessions_per_s"] / base["sessions_per_s"], 2),
                "p99_ratio": round(ours["command_p99_ms"] / base["command_p99_ms"], 2)
                if base["command_p99_ms"]
                else None,
                # sessions per server CPU-second, ours over the baseline's: what the ratio
                # of sessions/s would be if the driver were never the bottleneck.
                "cpu_efficiency_ratio": round(base_cpu / ours_cpu, 2)
                if base_cpu and ours_cpu
                else None,
            }
        )
    if report.ratios:
        top = max(report.ratios, key=lambda r: r["concurrency"])
        report.targets.append(
            {
                "name": f"sessions/s ours/{BASELINE} at concurrency {top['concurrency']}",
                "value": top["sessions_per_s_ratio"],
                "target": f">= {TARGET_RATIO:g}x",
                "met": top["sessions_per_s_ratio"] >= TARGET_RATIO,
            }
        )
    for row in report.rows:
        if row["server"] == CANDIDATE:
            report.targets.append(
                {
                    "name": f"our p99 per-command latency at concurrency {row['concurrency']}",
                    "value": row["command_p99_ms"],
                    "target": f"< {TARGET_P99_MS:g} ms",
                    "met": row["command_p99_ms"] < TARGET_P99_MS,
                }
            )


_COLUMNS = (
    ("server", "server", "{}"),
    ("conc", "concurrency", "{}"),
    ("sessions", "sessions", "{}"),
    ("sessions/s", "sessions_per_s", "{:.1f}"),
    ("cmd p50 ms", "command_p50_ms", "{:.3f}"),
    ("cmd p99 ms", "command_p99_ms", "{:.3f}"),
    ("session p50 ms", "session_p50_ms", "{:.3f}"),
    ("srv CPU %", "server_cpu_pct", "{}"),
    ("srv CPU us/sess", "server_cpu_us_per_session", "{}"),
    ("errors", "errors", "{}"),
    ("srv fail", "server_failures", "{}"),
)


def format_report(plan: Plan, report: Report) -> str:
    rows = sorted(report.rows, key=lambda r: (r["concurrency"], SERVERS.index(r["server"])))
    cells = [[fmt.format(row[key]) for _, key, fmt in _COLUMNS] for row in rows]
    widths = [
        max(len(title), *(len(c[i]) for c in cells)) if cells else len(title)
        for i, (title, _, _) in enumerate(_COLUMNS)
    ]
    lines = [
        "  ".join(t.rjust(w) for (t, _, _), w in zip(_COLUMNS, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    lines.append("")
    lines.append(
        f"cmd = server turnaround per command (6 per session); up to max({plan.min_sessions}, "
        f"10 x concurrency) sessions or {plan.duration:g} s per row; every server on uvloop, "
        f"listen backlog {BACKLOG}"
    )
    lines.append(
        "srv CPU = server process user+system CPU per completed session; "
        "floor = a no-parsing asyncio.Protocol server (driver + kernel cost alone)"
    )
    for ratio in report.ratios:
        p99 = "n/a" if ratio["p99_ratio"] is None else f"{ratio['p99_ratio']:.2f}x"
        eff = ratio["cpu_efficiency_ratio"]
        lines.append(
            f"concurrency {ratio['concurrency']:>4}: ours/{BASELINE} sessions/s "
            f"{ratio['sessions_per_s_ratio']:.2f}x, p99 latency {p99}, "
            f"sessions per server CPU-second {'n/a' if eff is None else f'{eff:.2f}x'}"
        )
    for target in report.targets:
        verdict = "target met" if target["met"] else "target missed"
        lines.append(f"{verdict}: {target['name']} = {target['value']} ({target['target']})")
    for row in report.rows:
        for sample in row["error_samples"]:
            lines.append(f"error ({row['server']}, c={row['concurrency']}): {sample}")
    lines += [f"failed: {failure}" for failure in report.failures]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agi_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few sessions at c=1 and c=5")
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON (- = stdout)"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated (default: all)"
    )
    parser.add_argument("--concurrency", help="comma-separated levels (default 1,50,500)")
    parser.add_argument("--duration", type=float, help="seconds per level (default 5)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin driver and server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.host, args.cpu)
    out = out or sys.stdout
    servers = tuple(s for s in args.servers.split(",") if s)
    unknown = set(servers) - set(SERVERS)
    if unknown:
        print(f"unknown server(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    default_levels = (1, 5) if args.quick else CONCURRENCIES
    plan = Plan(
        servers=servers,
        concurrencies=tuple(int(c) for c in args.concurrency.split(","))
        if args.concurrency
        else default_levels,
        duration=args.duration or (2.0 if args.quick else DURATION),
        min_sessions=20 if args.quick else MIN_SESSIONS,
        warmup_sessions=5 if args.quick else 200,
        pin=not args.no_pin,
    )
    report = run_plan(plan, args.host)
    document = {
        "plan": plan.__dict__,
        "results": report.rows,
        "ratios": report.ratios,
        "targets": report.targets,
        "failures": report.failures,
        "errors": report.errors,
    }
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
