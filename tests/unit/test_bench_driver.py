"""The load driver plays Asterisk correctly, and counts what goes wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bench import agi_load, ami_events, panoramisk_app
from bench.fake_asterisk import bench_script, environment, run_load, split_command
from bench.stats import Spread, paired_ratios

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SCRIPT_LINES = (
    b"ANSWER\n",
    b'GET VARIABLE "CALLERID(num)"\n',
    b'STREAM FILE beep ""\n',
    b"GET DATA prompt 3000 4\n",
    b"SET VARIABLE RESULT 1234\n",
    b"HANGUP\n",
)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    env = {}
    while (line := await reader.readline()) not in (b"\n", b""):
        key, _, value = line.decode().rstrip("\n").partition(": ")
        env[key] = value
    return env


def test_split_command_follows_res_agi_quoting():
    assert split_command('STREAM FILE beep ""') == ["STREAM", "FILE", "beep", ""]
    assert split_command('GET VARIABLE "CALLERID(num)"') == ["GET", "VARIABLE", "CALLERID(num)"]
    assert split_command(r'VERBOSE "a \"b\" c" 1') == ["VERBOSE", 'a "b" c', "1"]
    assert split_command("  GET  DATA prompt\t3000 4 ") == ["GET", "DATA", "prompt", "3000", "4"]


def test_environment_is_in_res_agi_order_and_ends_with_a_blank_line():
    block = environment(script_name="bench", uniqueid="1.7", channel_suffix="00000007")
    lines = block.decode().split("\n")
    assert block.endswith(b"\n\n")
    keys = [line.split(": ", 1)[0] for line in lines if line]
    assert keys[:3] == ["agi_network", "agi_network_script", "agi_request"]
    assert keys[-2:] == ["agi_threadid", "agi_arg_1"]
    assert "agi_uniqueid: 1.7" in lines
    assert "agi_accountcode: " in lines


async def test_driver_runs_the_script_against_a_trivial_server():
    sessions: list[tuple[dict[str, str], list[bytes]]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = await read_environment(reader)
        replies: list[bytes] = []
        sessions.append((env, replies))
        for line in SCRIPT_LINES:
            writer.write(line)
            replies.append(await reader.readline())
        writer.close()

    async with serving(handler) as port:
        result = await run_load(
            "127.0.0.1", port, concurrency=2, max_sessions=5, duration=10, session_timeout=5
        )

    assert (result.sessions, result.errors) == (5, 0), result.error_samples
    assert len(result.command_latencies) == 5 * len(SCRIPT_LINES)
    assert len(result.session_durations) == 5
    assert len({env["agi_uniqueid"] for env, _ in sessions}) == 5
    for env, replies in sessions:
        assert env["agi_network_script"] == "bench"
        assert replies == [step.reply for step in bench_script(env["agi_callerid"])]
    assert replies[1] == f"200 result=1 ({env['agi_callerid']})\n".encode()


async def test_driver_counts_a_wrong_command_as_an_error():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_environment(reader)
        writer.write(b"ANSWER\n")
        await reader.readline()
        writer.write(b"NOOP\n")
        await reader.read()  # the driver hangs up on us
        writer.close()

    async with serving(handler) as port:
        result = await run_load("127.0.0.1", port, concurrency=1, max_sessions=3, duration=10)

    assert (result.sessions, result.errors) == (0, 3)
    assert dict(result.error_kinds) == {"wrong_command": 3}
    assert "NOOP" in result.error_samples[0]


async def test_driver_counts_an_early_close_and_a_late_byte():
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_environment(reader)
        lines = SCRIPT_LINES[:2] if calls == 1 else SCRIPT_LINES
        for line in lines:
            writer.write(line)
            await reader.readline()
        if calls == 2:
            writer.write(b"NOOP\n")
        writer.close()

    async with serving(handler) as port:
        result = await run_load("127.0.0.1", port, concurrency=1, max_sessions=3, duration=10)

    assert (result.sessions, result.errors) == (1, 2)
    assert dict(result.error_kinds) == {"early_eof": 1, "after_hangup": 1}


async def test_driver_counts_a_refused_connection():
    async with serving(lambda r, w: asyncio.sleep(0)) as port:
        pass  # closed again: nothing listens on the port any more
    result = await run_load("127.0.0.1", port, concurrency=1, max_sessions=2, duration=10)
    assert (result.sessions, result.errors) == (0, 2)
    assert dict(result.error_kinds) == {"connect": 2}


async def test_panoramisk_baseline_serves_the_script():
    stats = panoramisk_app.FlowStats()
    server = await panoramisk_app.start("127.0.0.1", 0, stats)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await run_load("127.0.0.1", port, concurrency=5, max_sessions=20, duration=10)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.sessions, result.errors) == (20, 0), result.error_samples
    assert (stats.completed, stats.failed) == (20, 0)


def test_spread_is_the_median_and_the_range():
    assert Spread.of([3.0, 1.0, 2.0, 10.0, 2.5]) == Spread(2.5, 1.0, 10.0, 5)
    assert Spread.of([4.0, 2.0]) == Spread(3.0, 2.0, 4.0, 2)
    assert Spread.of([]) is None
    assert Spread(0.9, 0.85, 0.97, 5).format(".2f") == "0.90 (0.85-0.97)"
    assert Spread(0.9, 0.9, 0.9, 1).format(".2f") == "0.90"


def test_spread_excludes_a_value_only_outside_its_whole_range():
    spread = Spread(0.9, 0.85, 0.97, 5)
    assert spread.excludes(1.0)
    assert not spread.excludes(0.97)
    assert not Spread(0.9, 0.85, 1.02, 5).excludes(1.0)


def test_ratios_pair_repetitions_and_skip_the_missing():
    assert paired_ratios([2.0, 3.0, 4.0], [1.0, 2.0, 8.0]) == [2.0, 1.5, 0.5]
    # Repetition 2: the candidate failed; repetition 3: the baseline did; 4: zero baseline.
    assert paired_ratios([1.0, None, 3.0, 5.0], [2.0, 2.0, None, 0.0]) == [0.5]
    with pytest.raises(ValueError, match="than argument"):
        paired_ratios([1.0], [1.0, 2.0])


def test_report_summarises_repetitions_and_divides_by_the_baseline():
    plan = agi_load.Plan(
        servers=("panoramisk", "ours"),
        baseline="panoramisk",
        concurrencies=(50,),
        repeats=3,
        duration=1.0,
        min_sessions=10,
        warmup_sessions=0,
        pin=False,
        gc="default",
    )
    report = agi_load.Report()
    cpu = {"panoramisk": [100.0, 200.0, 120.0], "ours": [50.0, 150.0, 60.0]}
    for server, values in cpu.items():
        for repeat, value in enumerate(values):
            report.rows.append(
                {
                    "server": server,
                    "repeat": repeat,
                    "concurrency": 50,
                    "errors": 0,
                    "server_failures": 0,
                    "error_samples": [],
                    "server_cpu_us_per_session": value,
                    "command_p50_ms": 1.0,
                    "command_p99_ms": 2.0,
                    "peak_rss_mib": 30.0,
                    "sessions_per_s": 1000.0,
                }
            )
    agi_load._summarise(plan, report)

    ours = next(s for s in report.summary if s["server"] == "ours")
    assert ours["server_cpu_us_per_session"] == Spread(60.0, 50.0, 150.0, 3)
    (ratio,) = report.ratios
    assert ratio["server"] == "ours"
    # Paired 0.5, 0.75, 0.5; not the ratio of the medians (60/120).
    assert ratio["server_cpu_us_per_session"] == Spread(0.5, 0.5, 0.75, 3)
    assert ratio["sessions_per_s"] == Spread(1.0, 1.0, 1.0, 3)
    table = agi_load.format_report(plan, report)
    assert "ours/panoramisk" in table
    assert "0.50 (0.50-0.75)" in table


def test_report_gives_ours_in_calls_per_cpu_second_against_panoramisk_and_the_floor():
    plan = agi_load.Plan(
        servers=("panoramisk", "ours", "floor"),
        baseline="panoramisk",
        concurrencies=(50,),
        repeats=2,
        duration=1.0,
        min_sessions=10,
        warmup_sessions=0,
        pin=False,
        gc="tuned",
    )
    report = agi_load.Report()
    per_cpu = {"panoramisk": [1000, 2000], "ours": [2500, 3000], "floor": [5000, 4000]}
    for server, values in per_cpu.items():
        for repeat, value in enumerate(values):
            report.rows.append(
                {
                    "server": server,
                    "repeat": repeat,
                    "concurrency": 50,
                    "errors": 0,
                    "server_failures": 0,
                    "error_samples": [],
                    "server_cpu_us_per_session": 1e6 / value,
                    "sessions_per_cpu_s": value,
                    "command_p50_ms": 1.0,
                    "command_p99_ms": 2.0,
                    "peak_rss_mib": 30.0,
                    "sessions_per_s": 1000.0,
                }
            )
    agi_load._summarise(plan, report)

    (goal,) = report.goals
    # Paired: 2.5 and 1.5 against panoramisk; 0.5 and 0.75 against the floor.
    assert goal["vs_panoramisk"] == Spread(2.0, 1.5, 2.5, 2)
    assert goal["vs_floor"] == Spread(0.625, 0.5, 0.75, 2)
    table = agi_load.format_report(plan, report)
    assert "calls per CPU-second" in table
    assert "2.00 (1.50-2.50)" in table


def test_server_names_and_git_refs():
    assert agi_load.parse_server("ours") == ("ours", None)
    assert agi_load.parse_server("ours@HEAD~1") == ("ours", "HEAD~1")
    for bad in ("theirs", "panoramisk@HEAD", "ours@"):
        with pytest.raises(ValueError, match="unknown server"):
            agi_load.parse_server(bad)


def test_tuned_gc_is_what_production_runs():
    from fastagi import app

    assert agi_load.GC_YOUNG_THRESHOLD == app.GC_YOUNG_THRESHOLD


def test_the_ami_events_bench_runs_and_skips_what_nobody_listens_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A smoke run at a tiny size: the bench itself fails (exit 1) when a skipped event
    # reaches a listener or a parsed one does not.
    assert ami_events.main(["--calls", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "80 events of 20 calls (4 a call)" in out
