"""make bench-calls at a tiny size: the sandbox, both servers, every kind of call, the
tables. Proves the bench runs and reports; it asserts no timing."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from bench import calls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_tiny_bench_runs_both_servers_through_the_sandbox_and_reports(tmp_path: Path):
    out = io.StringIO()
    document = tmp_path / "calls.json"
    code = calls.main(
        ["--rates", "5", "--seconds", "1", "--repeats", "1", "--json", str(document)], out=out
    )
    assert code == 0, out.getvalue()
    steps = json.loads(document.read_text())["steps"]
    assert sorted((s["server"], s["kind"]) for s in steps) == sorted(
        (server, kind) for server in calls.SERVERS for kind in calls.KINDS
    )
    for step in steps:
        # Every call went through and the server wrote what its flow writes.
        assert (step["calls"], step["failed"]) == (5, 0), step
        # (CPU times come in 10 ms clock ticks: five calls of the floor may show 0.)
        assert step["server_cpu_ms_per_call"] >= 0, step
        # The server's own histogram counted the step's commands.
        assert step["cmd_p50_ms"] is not None, step
    table = out.getvalue()
    for kind in calls.KINDS:
        assert f"### {kind}" in table
    assert "ours/floor, repetition by repetition" in table
    assert "max rate with no failed call (floor): 5/s" in table


def test_tiny_ab_runs_our_server_as_of_a_commit_beside_this_checkouts(tmp_path: Path):
    out = io.StringIO()
    document = tmp_path / "calls.json"
    head = subprocess.run(
        ["git", "-C", str(calls.REPO_ROOT), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    code = calls.main(
        [
            *("--servers", "ours@HEAD,ours", "--baseline", "ours@HEAD", "--kinds", "probe"),
            *("--rates", "5", "--seconds", "1", "--repeats", "1", "--json", str(document)),
        ],
        out=out,
    )

    assert code == 0, out.getvalue()
    steps = json.loads(document.read_text())["steps"]
    assert sorted((s["server"], s["calls"], s["failed"]) for s in steps) == [
        ("ours", 5, 0),
        ("ours@HEAD", 5, 0),
    ]
    table = out.getvalue()
    assert "ours/ours@HEAD, repetition by repetition" in table
    assert f"ours@HEAD = commit {head}" in table
