"""The wire benchmark (`make bench`) at its smallest size: every server it compares runs in
a child process of its own and serves the whole script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import agi_load

pytestmark = pytest.mark.timeout(60)


def test_quick_benchmark_runs_every_server_in_child_processes(tmp_path: Path):
    out = tmp_path / "bench.json"
    with (tmp_path / "table.txt").open("w") as table_file:
        code = agi_load.main(["--quick", "--json", str(out)], out=table_file)
    document = json.loads(out.read_text())
    assert document["failures"] == []
    runs = [(r["server"], r["concurrency"], r["repeat"]) for r in document["results"]]
    assert sorted(runs) == sorted(
        (server, c, repeat) for server in agi_load.SERVERS for c in (1, 5) for repeat in (0, 1)
    )
    assert all(r["errors"] == 0 and r["sessions"] > 0 for r in document["results"])
    assert all(r["peak_rss_mib"] > 0 for r in document["results"])
    assert {(r["server"], r["concurrency"]) for r in document["ratios"]} == {
        (server, c) for server in ("ours", "floor") for c in (1, 5)
    }
    assert code == 0
    table = (tmp_path / "table.txt").read_text()
    assert "ours/panoramisk" in table
