"""``fastagi check``'s frame: how a run of checks adds up (statuses, exit codes, the
printed lines, the JSON), and how the runner treats checks (at once, after what they
need, bounded, never taking the others down). The checks themselves run against real
components in tests/e2e/test_check.py; here they are small functions."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fastagi.assurance import CHECKS, Check, CheckResult, Context, Finding, Report, Status
from fastagi.assurance.runner import run_checks, selected
from fastagi.cli import main
from fastagi.cli.check import print_report
from fastagi.config import CheckSettings, JournalSettings, Settings


def result(name: str, status: Status, message: str = "m", remedy: str = "") -> CheckResult:
    return CheckResult(name, status, message, remedy, 0.0)


@pytest.mark.parametrize(
    ("statuses", "overall", "code"),
    [
        ([Status.OK, Status.OK], Status.OK, 0),
        ([Status.OK, Status.WARN], Status.WARN, 1),
        ([Status.OK, Status.SKIP], Status.WARN, 1),
        ([Status.WARN, Status.FAIL, Status.SKIP], Status.FAIL, 2),
        ([], Status.OK, 0),
    ],
)
def test_the_worst_line_decides_the_exit_code(
    statuses: list[Status], overall: Status, code: int
) -> None:
    report = Report(tuple(result(f"c{i}", s) for i, s in enumerate(statuses)))
    assert report.status is overall
    assert report.exit_code == code


def test_one_line_per_check_the_remedy_under_a_problem_and_a_summary() -> None:
    report = Report(
        (
            result("postgresql", Status.OK, "PostgreSQL 15.4", remedy="never shown for OK"),
            result("ami", Status.FAIL, "login refused", remedy="check [ami] secret"),
            result("dialplan", Status.SKIP, "not checked: needs ami, which did not pass"),
            result("journal", Status.WARN, "no journal directory", remedy="set it"),
        )
    )
    out = io.StringIO()
    print_report(report, out)
    width = max(len(check.name) for check in CHECKS)
    indent = " " * (4 + 2 + width + 2)
    assert out.getvalue().splitlines() == [
        f"OK    {'postgresql':<{width}}  PostgreSQL 15.4",
        f"FAIL  {'ami':<{width}}  login refused",
        f"{indent}fix: check [ami] secret",
        f"SKIP  {'dialplan':<{width}}  not checked: needs ami, which did not pass",
        f"WARN  {'journal':<{width}}  no journal directory",
        f"{indent}fix: set it",
        "FAIL: 1 FAIL, 1 WARN, 1 SKIP, 1 OK",
    ]


def test_the_json_has_every_field_of_every_line() -> None:
    report = Report((CheckResult("smtp", Status.WARN, "no recipient", "set emails", 0.12345),))
    assert report.to_dict() == {
        "status": "WARN",
        "exit_code": 1,
        "checks": [
            {
                "name": "smtp",
                "status": "WARN",
                "message": "no recipient",
                "remedy": "set emails",
                "duration": 0.123,
            }
        ],
    }


def test_every_check_has_a_unique_name_and_needs_only_earlier_ones() -> None:
    names = [check.name for check in CHECKS]
    assert len(names) == len(set(names))
    for index, check in enumerate(CHECKS):
        assert set(check.needs) <= set(names[:index]), check.name


# -- the runner ---------------------------------------------------------------------------


def settings(timeout: float = 5.0) -> Settings:
    return Settings(check=CheckSettings(timeout=timeout), journal=JournalSettings(directory=None))


def fixed(finding: Finding) -> Callable[[Context], Awaitable[Finding]]:
    async def run(_context: Context) -> Finding:
        return finding

    return run


async def test_a_check_whose_need_did_not_pass_is_skipped_and_says_which() -> None:
    ran: list[str] = []

    async def dependent(_context: Context) -> Finding:
        ran.append("dependent")
        return Finding.ok("ran")

    checks = [
        Check("base", "", fixed(Finding.fail("down", "start it"))),
        Check("fine", "", fixed(Finding.warn("slow"))),
        Check("dependent", "", dependent, ("fine", "base")),
        Check("after-warn", "", fixed(Finding.ok("ran")), ("fine",)),
    ]
    report = await run_checks(settings(), checks)
    assert [(r.name, r.status) for r in report.results] == [
        ("base", Status.FAIL),
        ("fine", Status.WARN),
        ("dependent", Status.SKIP),
        ("after-warn", Status.OK),
    ]
    assert report.result("dependent").message == "not checked: needs base, which did not pass"
    assert ran == []


async def test_checks_run_at_once() -> None:
    # Each waits for the other: only a runner that runs them together finishes.
    first, second = asyncio.Event(), asyncio.Event()

    async def one(_context: Context) -> Finding:
        first.set()
        await second.wait()
        return Finding.ok("one")

    async def two(_context: Context) -> Finding:
        second.set()
        await first.wait()
        return Finding.ok("two")

    report = await run_checks(settings(timeout=2), [Check("one", "", one), Check("two", "", two)])
    assert [r.status for r in report.results] == [Status.OK, Status.OK]


async def test_a_check_that_raises_or_hangs_fails_alone() -> None:
    async def raises(_context: Context) -> Finding:
        raise RuntimeError("boom")

    async def own_timeout(_context: Context) -> Finding:
        raise TimeoutError("the AMI action timed out")

    async def hangs(_context: Context) -> Finding:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    checks = [
        Check("raises", "", raises),
        Check("own-timeout", "", own_timeout),
        Check("hangs", "", hangs),
        Check("fine", "", fixed(Finding.ok("fine"))),
    ]
    report = await run_checks(settings(timeout=0.2), checks)
    assert report.result("raises").message == "the check itself failed: RuntimeError: boom"
    assert report.result("own-timeout").message == (
        "the check itself failed: TimeoutError: the AMI action timed out"
    )
    assert report.result("hangs").message == "no answer within 0.2 s"
    assert report.result("hangs").status is Status.FAIL
    assert report.result("fine").status is Status.OK
    # It waited for the timeout. libuv (uvloop) keeps timers in whole milliseconds
    # (uv_now), so a 0.2 s timeout may fire at 0.19999... s of loop.time(): 1 ms slack.
    assert 0.2 - 0.001 <= report.result("hangs").duration < 1.0


def test_only_takes_what_the_named_checks_need_in_their_order() -> None:
    names = [check.name for check in selected(CHECKS, ["paging-devices", "journal"])]
    assert names == ["postgresql", "migrations", "ami", "paging-devices", "journal"]
    with pytest.raises(ValueError, match="no check named nope"):
        selected(CHECKS, ["nope"])


# -- the command --------------------------------------------------------------------------


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("FASTAGI_"):
            monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("FASTAGI_CONFIG", str(path))
    return path


def test_the_command_prints_json_and_exits_0_when_all_is_ok(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    config.write_text(f'[journal]\ndirectory = "{journal}"\n')
    assert main(["check", "--json", "--only", "journal"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["exit_code"] == 0
    [line] = printed["checks"]
    assert (line["name"], line["status"]) == ("journal", "OK")
    assert line["message"] == f"{journal} is writable; no history waiting in it"


def test_the_command_exits_2_on_a_fail_and_1_on_a_warn(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    config.write_text(f'[journal]\ndirectory = "{not_a_directory}"\n')
    assert main(["check", "--only", "journal"]) == 2
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("FAIL  journal")
    assert f"cannot write in {not_a_directory}" in first

    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "events.jsonl").write_text('{"event": {}}\n')
    config.write_text(f'[journal]\ndirectory = "{journal}"\n')
    assert main(["check", "--only", "journal"]) == 1
    assert capsys.readouterr().out.startswith("WARN  journal")


def test_an_unknown_check_is_one_line_on_stderr(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text("")
    assert main(["check", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastagi: error: no check named nope; the checks: postgresql,")


def test_the_recordings_directory_of_557(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locations = tmp_path / "locations"
    config.write_text(f'[recording]\ndirectory = "{locations}"\n')
    # Missing: the first *557 would create it with the server's owner, not Asterisk's group.
    assert main(["check", "--only", "recordings"]) == 1
    status, name, message = capsys.readouterr().out.splitlines()[0].split(None, 2)
    assert (status, name) == ("WARN", "recordings")
    assert message.startswith(f"{locations} does not exist: the first *557 creates it")
    # Nor can it be created (a file where its parent should be): still a WARN, with why.
    (tmp_path / "file").write_text("")
    config.write_text(f'[recording]\ndirectory = "{tmp_path / "file" / "locations"}"\n')
    assert main(["check", "--only", "recordings"]) == 1
    status, _, message = capsys.readouterr().out.splitlines()[0].split(None, 2)
    assert status == "WARN"
    assert "*557 cannot record" in message
    config.write_text(f'[recording]\ndirectory = "{locations}"\n')

    (locations / "incoming").mkdir(parents=True)
    assert main(["check", "--only", "recordings"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split(None, 2) == [
        "OK",
        "recordings",
        f"{locations} is writable",
    ]

    # incoming/ a file: a kept take could not be written or moved.
    (locations / "incoming").rmdir()
    (locations / "incoming").write_text("")
    assert main(["check", "--only", "recordings"]) == 2
    status, name, message = capsys.readouterr().out.splitlines()[0].split(None, 2)
    assert (status, name) == ("FAIL", "recordings")
    assert message.startswith(f"*557 cannot keep a recording: cannot write in {locations}")
