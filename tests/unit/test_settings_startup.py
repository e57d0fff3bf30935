"""``fastagi serve`` and ``python -m fastagi_dev run`` with bad settings: one line naming
the setting and the problem on stderr, no traceback, exit code 2, and never the value of a
setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastagi.cli import main
from fastagi.config import load_settings
from fastagi_dev.cli import main as dev_main

SECRET = "s3cr3t-Value-never-printed"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("FASTAGI_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("FASTAGI_CONFIG", str(config))
    return config


def run_failing(capsys: pytest.CaptureFixture[str], command: str = "serve") -> str:
    assert main([command]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert SECRET not in captured.err
    return lines[0]


def test_port_out_of_range(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_AGI__PORT", "70000")
    line = run_failing(capsys)
    assert line == (
        "fastagi: error: invalid settings: agi.port: Input should be less than or equal to 65535"
    )


def test_port_out_of_range_in_the_dev_environment(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_AGI__PORT", "70000")
    assert dev_main(["run"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "fastagi_dev: error: invalid settings: agi.port: "
        "Input should be less than or equal to 65535\n"
    )


def test_port_not_a_number(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_AGI__PORT", "forty")
    line = run_failing(capsys)
    assert line.startswith("fastagi: error: invalid settings: agi.port: Input should be a valid")


def test_unknown_key_in_the_file(clean_environment, capsys):
    clean_environment.write_text(f'[agi]\nport = 4573\nsecrte = "{SECRET}"\n')
    line = run_failing(capsys)
    assert line == "fastagi: error: invalid settings: agi.secrte: unknown setting"


def test_unknown_top_level_key(clean_environment, capsys):
    clean_environment.write_text(f'colour = "{SECRET}"\n')
    assert run_failing(capsys) == "fastagi: error: invalid settings: colour: unknown setting"


def test_malformed_allowed_networks(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_AGI__ALLOWED_NETWORKS", '["127.0.0.0/8", "10.0.0.0/33"]')
    line = run_failing(capsys)
    assert line.startswith("fastagi: error: invalid settings: agi.allowed_networks: ")
    assert "not an IP network: '10.0.0.0/33'" in line


def test_several_problems_in_one_line(clean_environment, capsys):
    clean_environment.write_text(
        "[agi]\nport = -1\nmax_sessions = 0\n[flows]\npin_timeout_ms = 5\n"
    )
    line = run_failing(capsys)
    for setting in ("agi.port", "agi.max_sessions", "flows.pin_timeout_ms"):
        assert f"{setting}: " in line


def test_a_secret_of_the_wrong_type_is_not_echoed(clean_environment, capsys):
    clean_environment.write_text(f'[ami]\nsecret = ["{SECRET}"]\n')
    line = run_failing(capsys)
    assert line.startswith("fastagi: error: invalid settings: ami.secret: ")


def test_bad_log_level(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_LOG_LEVEL", "LOUD")
    line = run_failing(capsys)
    assert line == (
        "fastagi: error: invalid settings: log_level: "
        "Value error, must be DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )


def test_missing_config_file(monkeypatch, tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("FASTAGI_CONFIG", str(missing))
    line = run_failing(capsys)
    assert line == (
        f"fastagi: error: cannot read the settings: FASTAGI_CONFIG names {missing}, "
        "which is not a file"
    )


def test_config_file_that_does_not_parse(clean_environment, capsys):
    clean_environment.write_text("[agi\nport = 1\n")
    line = run_failing(capsys)
    assert line.startswith("fastagi: error: cannot parse the settings file: ")


def test_an_unknown_department_that_would_page_nobody_stops_the_start(monkeypatch, capsys):
    monkeypatch.setenv("FASTAGI_ALARM__UNKNOWN_DEPARTMENT_DEVICES", "[]")
    line = run_failing(capsys)
    assert line == (
        "fastagi: error: invalid settings: alarm: Value error, unknown_department_devices is"
        " empty: an alarm from an extension in no department would page nobody; name"
        " devices, leave it unset to page every paging group, or set"
        " allow_unknown_department_to_page_nobody = true"
    )


def test_paging_nobody_is_allowed_when_said_so(monkeypatch):
    monkeypatch.setenv("FASTAGI_ALARM__UNKNOWN_DEPARTMENT_DEVICES", "[]")
    monkeypatch.setenv("FASTAGI_ALARM__ALLOW_UNKNOWN_DEPARTMENT_TO_PAGE_NOBODY", "true")
    assert load_settings().alarm.unknown_department_devices == []
