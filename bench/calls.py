"""Calls through the sandbox: SIPp -> sandbox Asterisk -> FastAGI server -> PostgreSQL.

``python -m bench.calls`` (what ``make bench-calls`` runs) boots the sandbox Asterisk and
a throwaway PostgreSQL cluster, starts our server (``fastagi serve``, configured as in
production) and the floor (``bench.floor_server``: the same AGI commands and the same SQL,
nothing else), each on its own port, and storms each kind of call at rising rates,
pointing Asterisk at one server, then at the other, step by step (the dialplan's global
``FASTAGI_PANIC_URL``, set over AMI): the two figures a ratio divides ran seconds apart.

Per step: calls failed (SIPp's failed calls, plus calls the server did not complete:
rows the flow did not write), server CPU per call (user + system time of the server
process, from /proc/PID/stat), Asterisk's CPU per call, the p50/p99 of the server's
per-command turnaround (its own histogram: our /metrics, the floor's STATS line; the
same buckets, fastagi/agi/stats.py), the machine's load average. Then per rate the
median (min-max) over the repetitions, the ratios ours/floor of each repetition, and per
server the highest rate with no failed call in any repetition.

``--servers ours@REF,ours --baseline ours@REF`` runs our server as of git ``REF`` beside
this checkout's, in the same run and on the same sandbox, step by step: the A/B of a
change on the whole call, paired repetition by repetition (``fastagi/``, ``sql/`` and
``setup.cfg`` of that commit, unpacked into the work directory; the bench's own code stays
this checkout's). Any server may be the ``--baseline`` the ratios divide by (the floor
unless told). The bench waits for each of our servers' READY=1 (systemd's notify socket),
which ``fastagi serve`` sends since 2ed62ad.

``--profile`` runs our server under py-spy (a flame graph SVG per run; py-spy from PyPI,
``pip install py-spy``), or cProfile when py-spy is not installed. ``--plots DIR`` writes
PNG plots with matplotlib (the ``bench`` extra).

Exit status: 0 when the bench ran (failed calls are results, not errors), 1 when it could
not run a step at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import asyncpg

from bench import revisions, storm
from bench.stats import Spread, paired_ratios
from bench.storm import CallKind
from fastagi.agi.stats import LATENCY_BOUNDS

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
OURS, FLOOR = "ours", "floor"
SERVERS = (OURS, FLOOR)
RATES = (50, 100, 200, 300)
SECONDS_PER_STEP = 5.0
REPEATS = 3
START_TIMEOUT = 60.0
# RTP ports for the calls at once (two per call: RTP and RTCP).
RTP_START = 40000
RTP_PORTS = 8000
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The department every desk phone belongs to, for the panic calls; its phones do not
# exist (no page is wanted: the paging loop is part 2's benchmark, not this one's).
DEPARTMENT = "Bench Ward"
PAGING_DEVICE = "PJSIP/299"

KINDS = {
    # *599: ANSWER, GET DATA (the prompt; the caller types 1 #), one INSERT, two SET
    # VARIABLE; Asterisk hangs up when the dialplan ends.
    "probe": CallKind(
        name="probe", route="probe", service="*599", keys=("1", "#"), first_key_ms=800
    ),
    # *555, 2: the question (pre-rendered at start-up), cancelled, "Alarm cancelled.";
    # Asterisk hangs up when the dialplan ends.
    "panic-cancel": CallKind(
        name="panic-cancel", route="panic", service="*555", keys=("2",), first_key_ms=800
    ),
    # *555, 1: confirmed, the department's alarm activated (re-triggered after the first
    # call), and the caller hangs up during "Alarm activated.", before any page of theirs.
    "panic-confirm": CallKind(
        name="panic-confirm",
        route="panic",
        service="*555",
        keys=("1",),
        first_key_ms=800,
        hang_up_ms=200,
    ),
}
# What a completed call of each kind leaves in the database.
COMPLETED_EVENT = {"panic-cancel": "cancelled", "panic-confirm": "confirmed"}


# --- the processes under test -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (its threads included, children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class ServerSample:
    cpu_s: float
    latency_counts: tuple[int, ...]  # per bucket of LATENCY_BOUNDS, the last above all


def _free_tcp_port() -> int:
    from fastagi_dev.cluster import free_port

    return free_port()


def parse_server(spec: str) -> tuple[str, str | None]:
    """``ours``, ``floor`` or ``ours@REF`` (our server as of git ``REF``): name and ref."""
    return revisions.parse_server(spec, SERVERS)


def export_tree(ref: str, into: Path) -> str:
    """Unpack what ``fastagi serve`` runs from as of git ``ref`` (the package, the schema
    its checks compare with, and setup.cfg, which marks ``sql/`` as the repository's) under
    ``into``; return the commit's short hash."""
    return revisions.export_tree(ref, into, ("fastagi", "sql", "setup.cfg"))


class OurServer:
    """``python -m fastagi serve`` (optionally under a profiler), configured the production
    way (FASTAGI_* variables), its per-command histogram read from its /metrics."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        profile: str | None = None,
        *,
        name: str = OURS,
        tree: Path | None = None,
    ) -> None:
        # ``tree``: a directory holding another ``fastagi`` (export_tree); ``python -m``
        # puts the working directory first on sys.path, so the server imports that one.
        self.name = name
        self.port = int(env["FASTAGI_AGI__PORT"])
        self.metrics_port = int(env["FASTAGI_METRICS__PORT"])
        stem = name.replace("@", "-at-")
        # A log per start (ours.log, ours-2.log, ...): a repetition's log outlives the next.
        self.log_path = next(
            path
            for n in itertools.count(1)
            if not (path := workdir / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")).exists()
        )
        self.profile_out: Path | None = None
        command = [sys.executable, "-m", "fastagi", "serve"]
        if profile == "py-spy":
            # Collapsed stacks ("frame;frame;frame count" lines): bench.profile reads them,
            # and flamegraph.pl or speedscope draw them.
            self.profile_out = workdir / f"{stem}-profile.txt"
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            record = [py_spy, "record", "--format", "raw", "--rate", "250"]
            command = [*record, "-o", str(self.profile_out), "--", *command]
        elif profile == "cprofile":
            self.profile_out = workdir / f"{stem}.prof"
            command = [sys.executable, "-m", "cProfile", "-o", str(self.profile_out)]
            command += ["-m", "fastagi", "serve"]
        # Ready when it says so as it would to systemd (READY=1 on NOTIFY_SOCKET,
        # fastagi/sdnotify.py): whatever its log level (--ours-setting
        # FASTAGI_LOG_LEVEL=WARNING prints no line to wait for).
        # Open until stop(): the server's STOPPING=1 finds it too, and warns of nothing.
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_path = self.log_path.with_suffix(".notify")
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(0.1)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                env={**env, "NOTIFY_SOCKET": str(self._notify_path)},
                cwd=tree or REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        # The launcher's until the server is up (stop() may need one before that).
        self.pid = self.proc.pid
        self._wait_ready()
        self.pid = self._server_pid()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(TimeoutError):
                if b"READY=1" in self._notify.recv(4096).split(b"\n"):
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fastagi serve did not start:\n{self._log()[-3000:]}")

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _server_pid(self) -> int:
        """The Python process serving: the profiler's child when there is one."""
        if self.profile_out is None or self.profile_out.suffix == ".prof":
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def sample(self) -> ServerSample:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as response:
            text = response.read().decode()
        cumulative = []
        for line in text.splitlines():
            if line.startswith("fastagi_agi_command_latency_seconds_bucket{"):
                cumulative.append(int(float(line.rsplit(" ", 1)[1])))
        counts = [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)]
        return ServerSample(cpu_seconds(self.pid), tuple(counts))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.profile_out else signal.SIGTERM)
            if self.profile_out is not None and self.profile_out.suffix == ".txt":
                # py-spy writes its output once the child exits.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._notify.close()
        self._notify_path.unlink(missing_ok=True)


class FloorServer:
    """``python -m bench.floor_server``, its histogram from its STATS line."""

    name = FLOOR

    def __init__(self, port: int, dsn: str, site: dict[str, Any], workdir: Path) -> None:
        self.port = port
        command = [sys.executable, "-m", "bench.floor_server", "--port", str(port)]
        command += ["--dsn", dsn, "--panic", json.dumps(site)]
        with (workdir / "floor.log").open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._expect("LISTENING")
        self.pid = self.proc.pid

    def _expect(self, tag: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(tag + " "):
            self.stop()
            raise RuntimeError(f"floor server: expected {tag!r}, got {line!r}")
        return line[len(tag) + 1 :]

    def sample(self) -> ServerSample:
        assert self.proc.stdin is not None
        self.proc.stdin.write("STATS\n")
        self.proc.stdin.flush()
        figures = json.loads(self._expect("STATS"))
        return ServerSample(cpu_seconds(self.pid), tuple(figures["latency_counts"]))

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


Server = OurServer | FloorServer


# --- the figures ----------------------------------------------------------------------------


def percentile(counts: Sequence[int], fraction: float) -> float | None:
    """The ``fraction`` quantile of a histogram of LATENCY_BOUNDS buckets, in seconds,
    interpolated linearly within its bucket (as Prometheus's histogram_quantile)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total
    running = 0
    for index, count in enumerate(counts):
        if count and running + count >= rank:
            lower = LATENCY_BOUNDS[index - 1] if index else 0.0
            if index >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]  # above every bound: the last bound, a floor
            upper = LATENCY_BOUNDS[index]
            return lower + (upper - lower) * (rank - running) / count
        running += count
    return LATENCY_BOUNDS[-1]


@dataclass
class Step:
    """One storm of one kind of call at one rate against one server."""

    server: str
    kind: str
    rate: int
    repeat: int
    calls: int
    failed: int
    sipp_failed: int
    not_completed: int  # calls SIPp saw succeed whose row the server did not write
    elapsed_s: float
    server_cpu_ms_per_call: float
    asterisk_cpu_ms_per_call: float
    cmd_p50_ms: float | None
    cmd_p99_ms: float | None
    load_average: float


# (key in a Step, column title, format)
METRICS = (
    ("failed", "failed", ".0f"),
    ("server_cpu_ms_per_call", "server CPU ms/call", ".2f"),
    ("asterisk_cpu_ms_per_call", "Asterisk CPU ms/call", ".2f"),
    ("cmd_p50_ms", "cmd p50 ms", ".3f"),
    ("cmd_p99_ms", "cmd p99 ms", ".2f"),
)
RATIO_METRICS = ("server_cpu_ms_per_call", "asterisk_cpu_ms_per_call", "cmd_p50_ms", "cmd_p99_ms")


@dataclass
class Plan:
    kinds: tuple[str, ...]
    rates: tuple[int, ...]
    seconds: float
    min_calls: int
    repeats: int
    servers: tuple[str, ...] = SERVERS  # ours, floor, ours@REF
    profile: str | None = None
    # FASTAGI_* variables set on our server over its deployed settings (--ours-setting).
    ours_settings: tuple[tuple[str, str], ...] = ()
    # The server every other one's ratios divide by.
    baseline: str = FLOOR

    @property
    def compared(self) -> tuple[str, ...]:
        """The servers compared with the baseline, in the order given."""
        if self.baseline not in self.servers:
            return ()
        return tuple(server for server in self.servers if server != self.baseline)

    def calls(self, rate: int) -> int:
        return max(self.min_calls, round(rate * self.seconds))


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    commits: dict[str, str] = field(default_factory=dict)  # ours@REF -> the commit it ran

    def series(self, server: str, kind: str, rate: int, key: str) -> list[float | None]:
        repeats = max((s.repeat for s in self.steps), default=-1) + 1
        found = {
            s.repeat: getattr(s, key)
            for s in self.steps
            if s.server == server and s.kind == kind and s.rate == rate
        }
        return [found.get(i) for i in range(repeats)]

    def spread(self, server: str, kind: str, rate: int, key: str) -> Spread | None:
        return Spread.of([v for v in self.series(server, kind, rate, key) if v is not None])

    def ratio(
        self, kind: str, rate: int, key: str, server: str = OURS, baseline: str = FLOOR
    ) -> Spread | None:
        """``server``'s figure over ``baseline``'s, repetition by repetition."""
        return Spread.of(
            paired_ratios(
                self.series(server, kind, rate, key), self.series(baseline, kind, rate, key)
            )
        )

    def max_clean_rate(self, server: str, kind: str, rates: Sequence[int]) -> int | None:
        """The highest rate at which no repetition failed a call (None: every rate did)."""
        clean = [
            rate
            for rate in rates
            if (failed := self.series(server, kind, rate, "failed"))
            and all(f == 0 for f in failed if f is not None)
            and any(f is not None for f in failed)
        ]
        return max(clean, default=None)


# --- the run ------------------------------------------------------------------------------


async def _completed_rows(pool: asyncpg.Pool[asyncpg.Record], kind: CallKind) -> int:
    """What the server wrote for the calls of ``kind`` so far."""
    if kind.route == "probe":
        return int(await pool.fetchval("SELECT count(*) FROM probe_calls"))
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM alarm_events WHERE kind = $1", COMPLETED_EVENT[kind.name]
        )
    )


@dataclass
class Bench:
    sandbox: Any  # fastagi_dev.sandbox.Sandbox
    pool: asyncpg.Pool[asyncpg.Record]
    servers: dict[str, Server]
    workdir: Path

    async def point_asterisk_at(self, server: Server) -> None:
        async with await self.sandbox.ami(events=False) as ami:
            reply = await ami.action(
                {
                    "Action": "Setvar",
                    "Variable": "FASTAGI_PANIC_URL",
                    "Value": f"agi://127.0.0.1:{server.port}",
                }
            )
        if reply.get("Response") != "Success":
            raise RuntimeError(f"Setvar FASTAGI_PANIC_URL: {reply}")

    async def step(
        self, server: Server, kind: CallKind, rate: int, calls: int, repeat: int
    ) -> Step:
        await self.point_asterisk_at(server)
        rows_before = await _completed_rows(self.pool, kind)
        before = server.sample()
        asterisk_before = cpu_seconds(self.sandbox.pid)
        # A port of the sandbox's claimed slot: one the kernel hands out as free may be
        # taken by another process before SIPp binds it (Sandbox.caller_port).
        sip_port_local = self.sandbox.caller_port()
        result = await asyncio.to_thread(
            storm.run_storm,
            kind,
            sip_port=self.sandbox.sip_port,
            local_port=sip_port_local,
            rate=rate,
            calls=calls,
            workdir=self.workdir / f"{server.name}-{kind.name}-{rate}-{repeat}",
        )
        # The last calls' sockets close as SIPp exits: let the server finish them.
        await asyncio.sleep(0.5)
        after = server.sample()
        asterisk_cpu = cpu_seconds(self.sandbox.pid) - asterisk_before
        rows = await _completed_rows(self.pool, kind) - rows_before
        counts = [b - a for a, b in zip(before.latency_counts, after.latency_counts, strict=True)]
        not_completed = max(0, result.successful - rows)
        p50, p99 = percentile(counts, 0.5), percentile(counts, 0.99)
        return Step(
            server=server.name,
            kind=kind.name,
            rate=rate,
            repeat=repeat,
            calls=calls,
            failed=result.failed + not_completed,
            sipp_failed=result.failed,
            not_completed=not_completed,
            elapsed_s=round(result.elapsed, 2),
            server_cpu_ms_per_call=round(1000 * (after.cpu_s - before.cpu_s) / calls, 3),
            asterisk_cpu_ms_per_call=round(1000 * asterisk_cpu / calls, 3),
            cmd_p50_ms=None if p50 is None else round(1000 * p50, 4),
            cmd_p99_ms=None if p99 is None else round(1000 * p99, 3),
            load_average=round(os.getloadavg()[0], 2),
        )


def our_env(
    sandbox: Any,
    dsn: str,
    port: int,
    workdir: Path,
    overrides: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """``fastagi serve`` as deployed (log level INFO, health checks on), against the
    sandbox; a metrics port of its own; then ``overrides`` (``--ours-setting``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAGI_")}
    env.update(
        {
            "FASTAGI_AGI__PORT": str(port),
            "FASTAGI_DATABASE__DSN": dsn,
            "FASTAGI_AMI__HOST": sandbox.ami_host,
            "FASTAGI_AMI__PORT": str(sandbox.ami_port),
            # The user `fastagi freepbx install` makes: its rights and its event filter.
            "FASTAGI_AMI__USERNAME": sandbox.least_ami_username,
            "FASTAGI_AMI__SECRET": sandbox.ami_secret,
            "FASTAGI_TTS__DIRECTORY": str(sandbox.tts_dir),
            "FASTAGI_TTS__ASTERISK_DIRECTORY": sandbox.tts_dir_in_asterisk,
            "FASTAGI_JOURNAL__DIRECTORY": str(workdir / "journal"),
            "FASTAGI_ALARM__UNKNOWN_DEPARTMENT_DEVICES": json.dumps([PAGING_DEVICE]),
            "FASTAGI_METRICS__PORT": str(_free_tcp_port()),
            "FASTAGI_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


async def _seed(pool: asyncpg.Pool[asyncpg.Record]) -> int:
    from fastagi.store import Stores

    store = Stores.over(pool)
    await store.directory.add_paging_group("bench")
    await store.directory.add_paging_device("bench", PAGING_DEVICE)
    department = await store.directory.add_department(DEPARTMENT, paging_group="bench")
    await store.directory.map_extensions(DEPARTMENT, "100-199")
    return department.id


@contextlib.contextmanager
def throwaway_cluster(workdir: Path) -> Iterator[str]:
    """A PostgreSQL cluster of its own under ``workdir``, tuned for speed (no fsync), with
    a database ``bench``; yields its DSN and stops the cluster afterwards."""
    from fastagi_dev.cluster import OS_USER, EmbeddedCluster

    # The server's OS user must reach the data directory: workdir is 0700 (mkdtemp).
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam(OS_USER)
        (workdir / "pg").mkdir()
        os.chmod(workdir, 0o711)
        os.chown(workdir / "pg", user.pw_uid, user.pw_gid)
    cluster = EmbeddedCluster(workdir / "pg" / "data", tuned_for_tests=True)
    cluster.init()
    cluster.start()
    try:
        cluster.ensure_database("bench")
        yield cluster.dsn("bench")
    finally:
        cluster.stop()


@contextlib.contextmanager
def _sandbox(agi_port: int) -> Iterator[Any]:
    from fastagi_dev.sandbox.image import default_rootfs
    from fastagi_dev.sandbox.instance import Sandbox
    from fastagi_dev.sandbox.ports import claim_sandbox_ports

    # A slot of ports no test session holds: the bench may run beside `make test`. Its
    # RTP range (200 ports: 100 calls at once) would refuse calls beyond 100 at a time
    # (488 Not Acceptable Here): a range of RTP_PORTS instead, in the ephemeral range,
    # where Asterisk steps over a port some connection holds.
    with claim_sandbox_ports() as claim:
        ports = dataclasses.replace(
            claim.ports, rtp_start=RTP_START, rtp_end=RTP_START + RTP_PORTS - 1
        )
        sandbox = Sandbox(
            default_rootfs(),
            f"bench-{os.getpid()}",
            ports,
            f"agi://127.0.0.1:{agi_port}",
            verbose=0,
        )
        sandbox.remove()
        sandbox.launch()
        try:
            asyncio.run(sandbox.wait_booted())
            yield sandbox
        finally:
            sandbox.stop_sync()
            sandbox.remove()


def run_plan(plan: Plan, workdir: Path, log: TextIO) -> Report:
    report = Report()
    trees: dict[str, Path] = {}
    for spec in plan.servers:
        _, ref = parse_server(spec)
        if ref is not None:
            trees[spec] = workdir / f"tree-{len(trees)}"
            report.commits[spec] = export_tree(ref, trees[spec])
    with throwaway_cluster(workdir) as dsn:
        # A port each: Asterisk is pointed at one server at a time, the others wait.
        ports = {spec: _free_tcp_port() for spec in plan.servers}
        with _sandbox(ports[plan.servers[0]]) as sandbox:
            department_id = asyncio.run(_migrate_and_seed(dsn))
            site = panic_site(sandbox, department_id)
            for repeat in range(plan.repeats):
                servers: dict[str, Server] = {}
                try:
                    # Started afresh each repetition, as agi_load does.
                    for spec in plan.servers:
                        if spec == FLOOR:
                            servers[spec] = FloorServer(ports[spec], dsn, site, workdir)
                            continue
                        env = our_env(sandbox, dsn, ports[spec], workdir, plan.ours_settings)
                        # Each its own journal: two live servers never share one.
                        env["FASTAGI_JOURNAL__DIRECTORY"] += f"-{len(servers)}"
                        servers[spec] = OurServer(
                            env,
                            workdir,
                            plan.profile if repeat == 0 else None,
                            name=spec,
                            tree=trees.get(spec),
                        )
                    asyncio.run(
                        _run_repeat(
                            plan,
                            repeat,
                            sandbox=sandbox,
                            dsn=dsn,
                            servers=servers,
                            workdir=workdir,
                            report=report,
                            log=log,
                        )
                    )
                finally:
                    for server in servers.values():
                        server.stop()
                        if isinstance(server, OurServer) and server.profile_out is not None:
                            report.profiles.append(str(server.profile_out))
    return report


def panic_site(sandbox: Any, department_id: int) -> dict[str, Any]:
    """What the floor's panic flow needs to know: the department, and the prompts our
    server renders at start-up (the floor plays the same files; it renders nothing)."""
    from fastagi.flows import prompts
    from fastagi.tts import TextToSpeech
    from fastagi_dev.sandbox.settings import tts_settings

    tts = TextToSpeech(tts_settings(sandbox))
    return {
        "department_id": department_id,
        "department": DEPARTMENT,
        "question": tts.prompt_for(prompts.panic_question(DEPARTMENT)).asterisk_name,
        "activated": tts.prompt_for(prompts.PANIC_ACTIVATED).asterisk_name,
        "cancelled": tts.prompt_for(prompts.PANIC_CANCELLED).asterisk_name,
    }


async def _migrate_and_seed(dsn: str) -> int:
    from fastagi.store.migrations import migrate

    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        return await _seed(pool)
    finally:
        await pool.close()


async def _run_repeat(
    plan: Plan,
    repeat: int,
    *,
    sandbox: Any,
    dsn: str,
    servers: dict[str, Server],
    workdir: Path,
    report: Report,
    log: TextIO,
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        bench = Bench(sandbox, pool, servers, workdir)
        for kind_name in plan.kinds:
            kind = KINDS[kind_name]
            # A warm-up: first calls pay for imports, prepared statements, rendering.
            for server in servers.values():
                await bench.step(server, kind, 10, 10, repeat)
            for rate in plan.rates:
                # Rotated every repetition: a slow patch of the machine falls on each.
                order = rotated(list(servers.values()), repeat + rate)
                for server in order:
                    step = await bench.step(server, kind, rate, plan.calls(rate), repeat)
                    report.steps.append(step)
                    print(
                        f"  {step.kind} {step.rate}/s {step.server} rep {repeat + 1}: "
                        f"{step.calls} calls, {step.failed} failed, server "
                        f"{step.server_cpu_ms_per_call:.2f} ms/call, Asterisk "
                        f"{step.asterisk_cpu_ms_per_call:.2f} ms/call, load "
                        f"{step.load_average}",
                        file=log,
                        flush=True,
                    )
    finally:
        await pool.close()


def rotated(items: list[T], turn: int) -> list[T]:
    """``items`` started ``turn`` places on (two servers: swapped every other turn)."""
    start = turn % len(items) if items else 0
    return items[start:] + items[:start]


# --- the report ------------------------------------------------------------------------------


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table: it reads in a terminal and pastes into docs/performance.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def _cell(spread: Spread | None, spec: str) -> str:
    return "n/a" if spread is None else spread.format(spec)


def format_report(plan: Plan, report: Report) -> str:
    lines: list[str] = []
    if plan.ours_settings:
        settings = " ".join(f"{name}={value}" for name, value in plan.ours_settings)
        lines += ["", f"our server ran with {settings}"]
    for kind in plan.kinds:
        lines += ["", f"### {kind}", ""]
        header = ["rate", "server", "calls", *(title for _, title, _ in METRICS), "load avg"]
        body = []
        for rate in plan.rates:
            for server in plan.servers:
                loads = report.spread(server, kind, rate, "load_average")
                if loads is None:
                    continue
                body.append(
                    [
                        f"{rate}/s",
                        server,
                        str(plan.calls(rate)),
                        *(_cell(report.spread(server, kind, rate, k), f) for k, _, f in METRICS),
                        _cell(loads, ".1f"),
                    ]
                )
        lines += _table(header, body)
        titles = {key: title for key, title, _ in METRICS}
        for server in plan.compared:
            lines += ["", f"{server}/{plan.baseline}, repetition by repetition:", ""]
            header = ["rate", *(titles[k] for k in RATIO_METRICS)]
            body = [
                [
                    f"{rate}/s",
                    *(
                        _cell(report.ratio(kind, rate, k, server, plan.baseline), ".2f")
                        for k in RATIO_METRICS
                    ),
                ]
                for rate in plan.rates
            ]
            lines += _table(header, body)
        lines.append("")
        for server in plan.servers:
            best = report.max_clean_rate(server, kind, plan.rates)
            lines.append(
                f"max rate with no failed call ({server}): "
                + (f"{best}/s" if best is not None else f"none of {list(plan.rates)}")
            )
        base = report.max_clean_rate(plan.baseline, kind, plan.rates)
        for server in plan.compared:
            best = report.max_clean_rate(server, kind, plan.rates)
            if best is not None and base is not None:
                lines.append(f"ratio {server}/{plan.baseline}: {best / base:.2f}")
    lines += [
        "",
        f"median (min-max) of {plan.repeats} repetitions; per rate max({plan.min_calls}, "
        f"rate x {plan.seconds:g} s) calls; each server started afresh every repetition, "
        "the servers taking turns step by step; CPU = user+system time of the process per "
        "call placed (/proc/PID/stat); cmd = the server's turnaround per AGI command "
        "(its histogram, interpolated within buckets); load avg = 1-minute load average "
        f"after the step; {os.cpu_count()} CPUs",
    ]
    lines += [f"{spec} = commit {commit}" for spec, commit in report.commits.items()]
    lines += [f"profile: {path}" for path in report.profiles]
    return "\n".join(lines)


def document(plan: Plan, report: Report) -> dict[str, Any]:
    return {
        "plan": asdict(plan),
        "steps": [asdict(s) for s in report.steps],
        "commits": report.commits,
    }


def write_plots(plan: Plan, report: Report, directory: Path) -> list[Path]:
    """PNG per kind of call: server CPU per call against the rate, ours and the floor
    (median, with the repetitions' range as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in plan.kinds:
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for server, marker in zip(plan.servers, itertools.cycle("osD^v"), strict=False):
            rates, medians, below, above = [], [], [], []
            for rate in plan.rates:
                spread = report.spread(server, kind, rate, "server_cpu_ms_per_call")
                if spread is None:
                    continue
                rates.append(rate)
                medians.append(spread.median)
                below.append(spread.median - spread.low)
                above.append(spread.high - spread.median)
            if rates:
                axes.errorbar(
                    rates, medians, yerr=[below, above], marker=marker, capsize=3, label=server
                )
        axes.set_xlabel("calls per second")
        axes.set_ylabel("server CPU per call (ms)")
        axes.set_title(f"{kind}: server CPU per call (median, range of {plan.repeats})")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
        path = directory / f"calls-{kind}-cpu.png"
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument(
        "--rates", default=",".join(map(str, RATES)), help="calls per second, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=SECONDS_PER_STEP, help="per step")
    parser.add_argument("--calls", type=int, default=0, help="at least this many calls per step")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated: ours, floor, or ours@REF, our server as of a git commit",
    )
    parser.add_argument(
        "--baseline", default=FLOOR, help="the server the ratios divide by (default: floor)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="our server under py-spy (else cProfile)"
    )
    parser.add_argument(
        "--ours-setting",
        action="append",
        default=[],
        metavar="FASTAGI_X=VALUE",
        help="an environment setting for our server over the deployed ones (repeatable), "
        "e.g. FASTAGI_HEALTH__ENABLED=false for an A/B of the health checks",
    )
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots there")
    parser.add_argument("--json", metavar="PATH", help="also write the steps as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--from-json", metavar="PATH", help="print the tables (and --plots) of a --json run"
    )
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    """The run the command line asks for; ValueError, with the reason, for one it cannot."""
    kinds = tuple(k for k in args.kinds.split(",") if k)
    servers = tuple(s for s in args.servers.split(",") if s)
    unknown = [k for k in kinds if k not in KINDS]
    for spec in servers:
        try:
            parse_server(spec)
        except ValueError:
            unknown.append(spec)
    if unknown:
        raise ValueError(f"unknown: {', '.join(unknown)}")
    if len(set(servers)) != len(servers):
        raise ValueError(f"a server named twice: {args.servers}")
    if len(servers) > 1 and args.baseline not in servers:
        raise ValueError(f"--baseline {args.baseline} is not one of --servers {args.servers}")
    overrides = []
    for setting in args.ours_setting:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("FASTAGI_"):
            raise ValueError(f"--ours-setting wants FASTAGI_NAME=VALUE, not {setting!r}")
        overrides.append((name, value))
    profile = None
    if args.profile:
        has_py_spy = shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()
        profile = "py-spy" if has_py_spy else "cprofile"
    return Plan(
        kinds=kinds,
        rates=tuple(int(r) for r in args.rates.split(",")),
        seconds=args.seconds,
        min_calls=args.calls,
        repeats=args.repeats,
        servers=servers,
        profile=profile,
        ours_settings=tuple(overrides),
        baseline=args.baseline,
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parse_args(argv)
    out = out or sys.stdout
    if args.from_json:
        plan, report = from_document(json.loads(Path(args.from_json).read_text()))
        return _report(plan, report, args.plots, out)
    try:
        plan = plan_of(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        report = run_plan(plan, workdir, out)
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=out)
        return 1
    finally:
        if not args.keep and not args.profile:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(document(plan, report), indent=2) + "\n")
    return _report(plan, report, args.plots, out)


def _report(plan: Plan, report: Report, plots: str | None, out: TextIO) -> int:
    print(format_report(plan, report), file=out)
    if plots:
        for path in write_plots(plan, report, Path(plots)):
            print(f"plot: {path}", file=out)
    return 0


def from_document(data: dict[str, Any]) -> tuple[Plan, Report]:
    """A run written with ``--json``, read back (``--from-json``: the tables and plots
    again without running anything)."""
    plan_fields = dict(data["plan"])
    for key in ("kinds", "rates", "servers"):
        plan_fields[key] = tuple(plan_fields[key])
    plan_fields["ours_settings"] = tuple(
        (name, value) for name, value in plan_fields.get("ours_settings", ())
    )
    steps = [Step(**step) for step in data["steps"]]
    return Plan(**plan_fields), Report(steps=steps, commits=dict(data.get("commits", {})))


if __name__ == "__main__":
    sys.exit(main())
