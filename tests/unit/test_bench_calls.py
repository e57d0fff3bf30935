"""bench.calls' figures and SIPp scenarios, without running anything."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bench import calls, storm
from bench.stats import Spread
from fastagi.agi.stats import LATENCY_BOUNDS


def test_percentile_interpolates_within_the_bucket():
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    counts[0] = 50  # up to 0.5 ms
    counts[1] = 50  # 0.5 to 1 ms
    assert calls.percentile(counts, 0.5) == LATENCY_BOUNDS[0]
    assert calls.percentile(counts, 0.75) == 0.00075
    assert calls.percentile([0] * len(counts), 0.5) is None
    counts[-1] = 1_000  # above every bound: reported as the last bound
    assert calls.percentile(counts, 0.99) == LATENCY_BOUNDS[-1]


def _step(server: str, rate: int, repeat: int, failed: int, cpu: float) -> calls.Step:
    return calls.Step(
        server=server,
        kind="probe",
        rate=rate,
        repeat=repeat,
        calls=10,
        failed=failed,
        sipp_failed=failed,
        not_completed=0,
        elapsed_s=1.0,
        server_cpu_ms_per_call=cpu,
        asterisk_cpu_ms_per_call=4.0,
        cmd_p50_ms=0.3,
        cmd_p99_ms=2.0,
        load_average=1.0,
    )


def test_report_pairs_repetitions_and_finds_the_highest_clean_rate():
    report = calls.Report(
        steps=[
            _step("ours", 100, 0, 0, 2.0),
            _step("floor", 100, 0, 0, 1.0),
            _step("ours", 100, 1, 0, 3.0),
            _step("floor", 100, 1, 0, 1.0),
            _step("ours", 200, 0, 0, 1.5),
            _step("floor", 200, 0, 0, 1.0),
            _step("ours", 200, 1, 3, 1.5),  # one repetition failed calls at 200/s
            _step("floor", 200, 1, 0, 1.0),
        ]
    )
    assert report.ratio("probe", 100, "server_cpu_ms_per_call") == Spread(2.5, 2.0, 3.0, 2)
    assert report.max_clean_rate("ours", "probe", (100, 200)) == 100
    assert report.max_clean_rate("floor", "probe", (100, 200)) == 200
    plan = calls.Plan(kinds=("probe",), rates=(100, 200), seconds=1, min_calls=10, repeats=2)
    table = calls.format_report(plan, report)
    assert "| 100/s | 2.50 (2.00-3.00) |" in table
    assert "max rate with no failed call (ours): 100/s" in table
    assert "ratio ours/floor: 0.50" in table


def test_every_kind_of_call_is_a_valid_scenario_that_types_its_keys():
    for kind in calls.KINDS.values():
        root = ET.fromstring(storm.scenario(kind).split("\n", 2)[2])
        sent = [element.text or "" for element in root.iter("send")]
        infos = [text for text in sent if "INFO sip:" in text]
        assert [text.split("Signal=")[1].split()[0] for text in infos] == list(kind.keys)
        hangs_up = any("BYE sip:" in text for text in sent)
        assert hangs_up == (kind.hang_up_ms is not None)


def test_the_callers_are_the_desk_phones_in_turn():
    lines = storm.injection_file().splitlines()
    assert lines[0] == "SEQUENTIAL"
    assert lines[1:3] == ["100;", "101;"]
    assert len(lines) == 1 + len(storm.DESK_PHONES)
