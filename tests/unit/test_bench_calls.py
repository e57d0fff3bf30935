"""bench.calls' figures and SIPp scenarios, without running anything."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

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


def test_a_server_is_ours_the_floor_or_ours_as_of_a_commit():
    assert calls.parse_server("ours") == ("ours", None)
    assert calls.parse_server("floor") == ("floor", None)
    assert calls.parse_server("ours@HEAD~2") == ("ours", "HEAD~2")
    for bad in ("panoramisk", "floor@HEAD", "ours@", "@HEAD"):
        with pytest.raises(ValueError, match="unknown server"):
            calls.parse_server(bad)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--servers", "ours,ours@HEAD"], "--baseline floor is not one of"),
        (["--servers", "ours,floor,ours"], "a server named twice"),
        (["--servers", "ours,florr"], "unknown: florr"),
        (["--kinds", "probe,pager"], "unknown: pager"),
        (["--ours-setting", "LOG_LEVEL=DEBUG"], "wants FASTAGI_NAME=VALUE"),
    ],
)
def test_a_plan_it_cannot_run_is_refused_with_the_reason(argv, reason):
    with pytest.raises(ValueError, match=reason):
        calls.plan_of(calls._parse_args(argv))


def test_an_ab_of_two_commits_is_paired_against_the_chosen_baseline():
    report = calls.Report(
        steps=[
            _step("ours@abc", 100, 0, 0, 2.0),
            _step("ours", 100, 0, 0, 1.8),
            _step("floor", 100, 0, 0, 1.0),
            _step("ours@abc", 100, 1, 0, 3.0),
            _step("ours", 100, 1, 0, 2.4),
            _step("floor", 100, 1, 0, 1.5),
        ],
        commits={"ours@abc": "abc1234"},
    )
    plan = calls.Plan(
        kinds=("probe",),
        rates=(100,),
        seconds=1,
        min_calls=10,
        repeats=2,
        servers=("ours@abc", "ours", "floor"),
        baseline="ours@abc",
    )

    table = calls.format_report(plan, report)

    assert plan.compared == ("ours", "floor")
    # 1.8/2.0 and 2.4/3.0: 0.9 and 0.8; the floor 0.5 both times.
    ratio = report.ratio("probe", 100, "server_cpu_ms_per_call", "ours", "ours@abc")
    assert ratio is not None
    assert (ratio.median, ratio.low, ratio.high, ratio.count) == pytest.approx((0.85, 0.8, 0.9, 2))
    assert "ours/ours@abc, repetition by repetition:" in table
    assert "floor/ours@abc, repetition by repetition:" in table
    assert "| 100/s | 0.85 (0.80-0.90) |" in table
    assert "ours@abc = commit abc1234" in table
    assert "ours/floor" not in table


def test_the_step_order_turns_so_each_server_goes_first_in_turn():
    servers = ["a", "b", "c"]

    firsts = [calls.rotated(servers, turn)[0] for turn in range(3)]

    assert firsts == ["a", "b", "c"]
    assert calls.rotated(servers[:2], 1) == ["b", "a"]


def test_a_json_run_reads_back_with_its_commits(tmp_path):
    plan = calls.Plan(
        kinds=("probe",),
        rates=(100,),
        seconds=1,
        min_calls=10,
        repeats=1,
        servers=("ours@abc", "ours"),
        baseline="ours@abc",
    )
    report = calls.Report(
        steps=[_step("ours@abc", 100, 0, 0, 2.0), _step("ours", 100, 0, 0, 1.8)],
        commits={"ours@abc": "abc1234"},
    )

    again_plan, again_report = calls.from_document(calls.document(plan, report))

    assert again_plan == plan
    assert again_report.commits == {"ours@abc": "abc1234"}
    assert again_report.steps == report.steps
