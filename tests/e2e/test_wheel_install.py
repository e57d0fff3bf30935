"""The production install path (README, "Production install"): ``make dist`` builds the
wheel, a fresh venv installs it, and the installed ``fastagi`` works from a directory
outside the repository: ``--help``, ``db migrate`` against a throwaway database, and
``freepbx install --dry-run`` finding the dialplan and unit it ships."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.unit.test_freepbx_plan import FREEPBX

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FASTAGI_", "PYTHON", "VIRTUAL_ENV"))
    }
    environment.update(env)
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=500, check=False
    )


def build(tmp_path: Path, name: str) -> tuple[Path, float]:
    started = time.monotonic()
    # A copy of the sources of its own, beside a `make dist` someone runs meanwhile.
    result = run(
        ["make", "-s", "dist", f"DIST={tmp_path / name}", f"BUILD_SRC={tmp_path / 'src'}"], ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / name).glob("fastagi_panic-*.whl")
    return wheel, time.monotonic() - started


def test_the_wheel_installs_and_runs_outside_the_repository(
    tmp_path: Path, empty_database_dsn: str
) -> None:
    wheel, built = build(tmp_path, "dist")
    again, rebuilt = build(tmp_path, "dist-again")
    print(f"make dist: {built:.1f} s, again {rebuilt:.1f} s")
    # Pinned build tools and SOURCE_DATE_EPOCH: the same wheel, byte for byte.
    assert (
        hashlib.sha256(wheel.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    )

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dialplan = archive.read("fastagi/freepbx/fastagi-panic.conf")
    assert [n for n in names if n.startswith(("fastagi_dev", "tests/", "bench/"))] == []
    migrations = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    shipped = sorted(
        Path(n).name for n in names if "/data/share/fastagi-panic/sql/" in n and n.endswith(".sql")
    )
    assert shipped == migrations
    assert "fastagi/freepbx/fastagi-panic.service" in names
    # The web console's templates and static files travel with its code.
    for name in ("templates/board.html", "templates/_alarm_card.html", "static/board.js"):
        assert f"fastagi/web/{name}" in names
    assert dialplan == (ROOT / "extensions_custom.conf").read_bytes()

    venv = tmp_path / "opt-fastagi-panic"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    started = time.monotonic()
    made = run([sys.executable, "-m", "venv", str(venv)], outside)
    assert made.returncode == 0, made.stderr
    installed = run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], outside)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    print(f"venv and pip install of the wheel: {time.monotonic() - started:.1f} s")

    fastagi = str(venv / "bin" / "fastagi")
    where = run(
        [str(venv / "bin" / "python"), "-c", "import fastagi; print(fastagi.__file__)"], outside
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    helped = run([fastagi, "--help"], outside)
    assert helped.returncode == 0, helped.stderr
    assert "freepbx" in helped.stdout
    migrated = run([fastagi, "db", "migrate", "--dsn", empty_database_dsn], outside)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines() == [f"applied {name}" for name in migrations]
    status = run([fastagi, "db", "status", "--dsn", empty_database_dsn], outside)
    assert status.returncode == 0, status.stdout + status.stderr
    listed = run([fastagi, "user", "list", "--json", "--dsn", empty_database_dsn], outside)
    assert (listed.returncode, listed.stdout.strip()) == (0, "[]"), listed.stderr

    etc = tmp_path / "asterisk"
    etc.mkdir()
    for name, text in FREEPBX.items():
        (etc / name).write_text(text)
    dry = run(
        [
            fastagi,
            "freepbx",
            "install",
            "--dry-run",
            "--asterisk-dir",
            str(etc),
            "--config",
            str(tmp_path / "config.toml"),
            "--asterisk-user",
            "root",
            "--systemd",
            "--unit-path",
            str(tmp_path / "fastagi-panic.service"),
        ],
        outside,
    )
    assert dry.returncode == 0, dry.stderr
    assert "+[fastagi-panic-features]\n" in dry.stdout
    assert f"+ExecStart={venv}/bin/fastagi serve\n" in dry.stdout
