"""``fastagi freepbx install``/``uninstall`` on a FreePBX-shaped directory in tmp_path:
idempotence, --dry-run, byte-identical uninstall, modes, the reload it runs, refusals.
(tests/e2e/test_freepbx_install.py does the same against a running Asterisk.)"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from fastagi.cli import main
from fastagi.freepbx.apply import reload_commands
from tests.unit.test_freepbx_plan import FREEPBX


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    etc = tmp_path / "asterisk"
    etc.mkdir()
    for name, text in FREEPBX.items():
        (etc / name).write_text(text)
    # Modes and an owner install must keep (a new manager_custom.conf would get 0640).
    (etc / "manager_custom.conf").chmod(0o600)
    nobody = pwd.getpwnam("nobody")
    os.chown(etc / "extensions_custom.conf", nobody.pw_uid, nobody.pw_gid)
    # A fake `asterisk` for the reloads: it records how it was called.
    fake = tmp_path / "fake-asterisk"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "reloads.log"}\n')
    fake.chmod(0o755)
    return tmp_path


def args(tree: Path, *extra: str) -> list[str]:
    return [
        "--asterisk-dir",
        str(tree / "asterisk"),
        "--config",
        str(tree / "etc-fastagi" / "config.toml"),
        "--unit-path",
        str(tree / "fastagi-panic.service"),
        "--asterisk-command",
        str(tree / "fake-asterisk"),
        *extra,
    ]


def install_args(tree: Path, *extra: str) -> list[str]:
    return [
        "freepbx",
        "install",
        *args(tree, *extra),
        "--asterisk-user",
        "root",
        "--tts-dir",
        str(tree / "sounds" / "fastagi-panic"),
        "--recordings-dir",
        str(tree / "sounds" / "locations"),
        "--journal-dir",
        str(tree / "journal"),
        "--dsn",
        "postgresql://fastagi:pg-password@127.0.0.1/fastagi",
        "--systemd",
    ]


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "reloads.log"
    }


def reloads(tree: Path) -> list[str]:
    log = tree / "reloads.log"
    return log.read_text().splitlines() if log.exists() else []


def test_install_is_idempotent_and_uninstall_restores_every_byte(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(tree)
    assert main(install_args(tree)) == 0
    first = capsys.readouterr().out
    assert f"created {tree}/asterisk/fastagi-panic.conf" in first
    assert reloads(tree) == ["-rx dialplan reload", "-rx manager reload"]
    installed = digests(tree)
    config = tree / "etc-fastagi" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((tree / "etc-fastagi").stat().st_mode) == 0o700
    # An existing file keeps its mode and owner.
    assert stat.S_IMODE((tree / "asterisk" / "manager_custom.conf").stat().st_mode) == 0o600
    custom = (tree / "asterisk" / "extensions_custom.conf").stat()
    assert (custom.st_uid, custom.st_gid) == (
        pwd.getpwnam("nobody").pw_uid,
        pwd.getpwnam("nobody").pw_gid,
    )
    for directory in (
        tree / "sounds" / "fastagi-panic",
        tree / "sounds" / "locations",
        tree / "sounds" / "locations" / "incoming",
        tree / "journal",
    ):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o2770
    assert tomllib.loads(config.read_text())["recording"]["directory"] == str(
        tree / "sounds" / "locations"
    )
    secret = tomllib.loads(config.read_text())["ami"]["secret"]
    assert len(secret) >= 32
    assert secret in (tree / "asterisk" / "manager_custom.conf").read_text()

    assert main(install_args(tree)) == 0
    assert capsys.readouterr().out == "nothing to change: already installed\n"
    assert digests(tree) == installed
    assert len(reloads(tree)) == 2  # nothing changed, nothing reloaded

    assert main(["freepbx", "uninstall", *args(tree)]) == 0
    out = capsys.readouterr().out
    assert f"deleted {config}" in out
    assert "left in place (remove by hand when done): " in out
    assert digests(tree) == before
    assert len(reloads(tree)) == 4
    assert main(["freepbx", "uninstall", *args(tree)]) == 0
    assert capsys.readouterr().out.endswith("nothing to change: not installed\n")


def test_dry_run_prints_every_diff_and_changes_nothing(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(tree)
    assert main(install_args(tree, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert digests(tree) == before
    assert not (tree / "journal").exists()
    assert reloads(tree) == []
    for name in (
        "asterisk/fastagi-panic.conf",
        "asterisk/extensions_custom.conf",
        "asterisk/globals_custom.conf",
        "asterisk/manager_custom.conf",
        "etc-fastagi/config.toml",
        "fastagi-panic.service",
    ):
        assert f"+++ {tree}/{name}\n" in out
    assert "+#include fastagi-panic.conf\n" in out
    assert "+secret = ********\n" in out
    assert "pg-password" not in out
    assert f"# would create {tree}/journal/ (mode 2770, owner root)\n" in out
    for created in ("sounds/locations", "sounds/locations/incoming"):
        assert f"# would create {tree}/{created}/ (mode 2770, owner root)\n" in out
    assert not (tree / "sounds" / "locations").exists()
    assert f"# would run: {tree}/fake-asterisk -rx 'manager reload'\n" in out

    (tree / "asterisk" / "manager_custom.conf").chmod(0o644)
    assert main(install_args(tree)) == 0
    assert (
        f"note: {tree}/asterisk/manager_custom.conf is readable by every local user, and so is "
        "the AMI secret in it\n"
    ) in capsys.readouterr().out
    assert main(["freepbx", "uninstall", *args(tree, "--dry-run")]) == 0
    out = capsys.readouterr().out
    assert "+++ /dev/null\n" in out
    assert "-#include fastagi-panic.conf\n" in out
    assert "-secret = ********\n" in out
    assert (tree / "asterisk" / "fastagi-panic.conf").exists()


def test_a_failed_reload_is_an_error_after_the_files_are_written(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "fake-asterisk").write_text(
        "#!/bin/sh\necho 'Unable to connect to remote asterisk' >&2\nexit 1\n"
    )
    assert main(install_args(tree)) == 1
    err = capsys.readouterr().err
    assert "-rx 'dialplan reload'` failed: Unable to connect to remote asterisk" in err
    assert (tree / "asterisk" / "fastagi-panic.conf").exists()


def run_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_refused_when_not_root(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = digests(tree)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run_refused(install_args(tree), capsys) == (
        "fastagi: error: run as root: the files belong to Asterisk and systemd "
        "(--allow-non-root to try anyway)"
    )
    assert run_refused(["freepbx", "uninstall", *args(tree)], capsys).startswith(
        "fastagi: error: run as root"
    )
    assert digests(tree) == before


def test_refused_when_the_tree_is_not_freepbx(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "asterisk" / "extensions.conf").write_text("[default]\nexten => s,1,Hangup()\n")
    before = digests(tree)
    assert run_refused(install_args(tree), capsys) == (
        f"fastagi: error: {tree}/asterisk does not look like FreePBX's: extensions.conf does "
        "not #include extensions_custom.conf; no context of extensions.conf includes "
        "from-internal-custom (--force installs anyway)"
    )
    assert digests(tree) == before
    assert main(install_args(tree, "--force")) == 0
    assert "note: nothing includes extensions_custom.conf" in capsys.readouterr().out


def test_reload_commands() -> None:
    on_freepbx = {"fwconsole": "/usr/sbin/fwconsole", "asterisk": "/usr/sbin/asterisk"}
    assert reload_commands(None, on_freepbx.get) == [["fwconsole", "reload"]]
    assert reload_commands(None, {"asterisk": "/usr/sbin/asterisk"}.get) == [
        ["asterisk", "-rx", "dialplan reload"],
        ["asterisk", "-rx", "manager reload"],
    ]
    assert reload_commands(["asterisk", "-C", "/x.conf"], on_freepbx.get) == [
        ["asterisk", "-C", "/x.conf", "-rx", "dialplan reload"],
        ["asterisk", "-C", "/x.conf", "-rx", "manager reload"],
    ]
    nothing: dict[str, str] = {}
    assert reload_commands(None, nothing.get) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_unit_is_one_systemd_accepts(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(install_args(tree)) == 0
    unit = tree / "fastagi-panic.service"
    # Offline: reads the file, checks every section, key and value (and ExecStart's
    # program); an unknown or misspelt directive is a line on stderr, not an exit code.
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    text = unit.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=10",
        "Restart=always",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        # The server moves *557's takes out of the recordings' incoming/.
        f"ReadWritePaths={tree}/sounds/fastagi-panic {tree}/sounds/locations {tree}/journal",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert f"\n{line}\n" in text, line
