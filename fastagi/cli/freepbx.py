"""``fastagi freepbx install`` and ``fastagi freepbx uninstall`` (fastagi/freepbx/)."""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import secrets
import shlex
import sys
import tomllib
from pathlib import Path, PurePosixPath

from fastagi.cli.common import SubParsers, fail
from fastagi.config import JournalSettings
from fastagi.config.recording import DEFAULT_DIRECTORY as DEFAULT_RECORDINGS_DIRECTORY
from fastagi.config.recording import INCOMING
from fastagi.config.tts import DEFAULT_DIRECTORY as DEFAULT_TTS_DIRECTORY
from fastagi.freepbx import apply, blocks
from fastagi.freepbx.plan import (
    MANAGER_CUSTOM,
    InstallRequest,
    Plan,
    PlanError,
    UninstallRequest,
    asterisk_user,
    check_shape,
    plan_install,
    plan_uninstall,
    unified_diff,
)

DEFAULT_ASTERISK_DIR = Path("/etc/asterisk")
DEFAULT_CONFIG = Path("/etc/fastagi-panic/config.toml")
DEFAULT_UNIT = Path("/etc/systemd/system/fastagi-panic.service")
DEFAULT_AGI_URL = "agi://127.0.0.1:4573"
DEFAULT_AMI_USER = "fastagi-panic"
DEFAULT_JOURNAL = JournalSettings().directory or Path("/var/lib/fastagi-panic/journal")
SECRET_BYTES = 24


def register(subparsers: SubParsers) -> None:
    freepbx = subparsers.add_parser(
        "freepbx", help="install into FreePBX (or a plain Asterisk): install, uninstall"
    )
    actions = freepbx.add_subparsers(dest="freepbx_action", metavar="ACTION", required=True)

    install = actions.add_parser(
        "install",
        help="dialplan, globals, AMI user, settings (and systemd unit); reload Asterisk",
        description=(
            "Run as root on the Asterisk host. Writes fastagi-panic.conf and marked blocks "
            "into extensions_custom.conf, globals_custom.conf and manager_custom.conf, the "
            "server's settings file, and with --systemd the unit; creates the prompt, "
            "recordings and journal directories; reloads Asterisk. A second run changes nothing."
        ),
    )
    _add_common(install)
    install.add_argument(
        "--agi-url",
        default=DEFAULT_AGI_URL,
        help=f"where Asterisk reaches the server ({DEFAULT_AGI_URL})",
    )
    install.add_argument("--agi-url2", help="a second server, tried when the first is down")
    install.add_argument(
        "--ami-user", default=DEFAULT_AMI_USER, help=f"the AMI user to write ({DEFAULT_AMI_USER})"
    )
    install.add_argument(
        "--asterisk-user",
        help="who runs Asterisk (default: runuser of asterisk.conf, else asterisk)",
    )
    install.add_argument("--asterisk-group", help="Asterisk's group (default: the user's own)")
    install.add_argument(
        "--tts-dir",
        type=Path,
        default=DEFAULT_TTS_DIRECTORY,
        help="prompt directory (as the server sees it)",
    )
    install.add_argument(
        "--tts-asterisk-dir", help="the prompt directory as Asterisk sees it, if different"
    )
    install.add_argument(
        "--recordings-dir",
        type=Path,
        default=DEFAULT_RECORDINGS_DIRECTORY,
        help="recorded locations of *557 (as the server sees it)",
    )
    install.add_argument(
        "--recordings-asterisk-dir",
        help="the recordings directory as Asterisk sees it, if different",
    )
    install.add_argument(
        "--journal-dir", type=Path, default=DEFAULT_JOURNAL, help="history journal directory"
    )
    install.add_argument("--dsn", help="PostgreSQL URL to write into the settings")
    install.add_argument("--systemd", action="store_true", help="also write the systemd unit")
    install.add_argument(
        "--watchdog-sec", type=int, default=10, help="the unit's WatchdogSec (default 10)"
    )
    install.add_argument(
        "--feature-codes",
        choices=("dialplan", "freepbx"),
        default="dialplan",
        help="who answers *555/*556/*599: our [from-internal-custom] (dialplan, default) or "
        "FreePBX's Misc Applications (freepbx; README)",
    )
    install.add_argument(
        "--force", action="store_true", help="install into a tree that does not look like FreePBX's"
    )
    install.set_defaults(handler=run_install)

    uninstall = actions.add_parser(
        "uninstall",
        help="remove what install wrote; the files are as they were before",
        description=(
            "Removes the marked blocks and the files install created (config.toml only if "
            "unedited), then reloads Asterisk. The prompt, recordings and journal directories "
            "are left (recordings are the sites' own voices): "
            "the journal may hold history that has not reached PostgreSQL yet."
        ),
    )
    _add_common(uninstall)
    uninstall.set_defaults(handler=run_uninstall)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--asterisk-dir",
        type=Path,
        default=DEFAULT_ASTERISK_DIR,
        help=f"Asterisk's configuration ({DEFAULT_ASTERISK_DIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the server's settings file ({DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--unit-path", type=Path, default=DEFAULT_UNIT, help=f"the systemd unit ({DEFAULT_UNIT})"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the diff of every change, change nothing"
    )
    parser.add_argument(
        "--asterisk-command",
        help="how to run asterisk for `-rx` reloads, e.g. 'asterisk -C /etc/asterisk/"
        "asterisk.conf' (default: fwconsole reload on FreePBX, else asterisk)",
    )
    parser.add_argument("--no-reload", action="store_true", help="do not reload Asterisk")
    parser.add_argument("--allow-non-root", action="store_true", help="do not insist on root")


def _absolute(path: Path) -> PurePosixPath:
    return PurePosixPath(os.path.abspath(path))


def _preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0 and not args.allow_non_root:
        fail(
            "run as root: the files belong to Asterisk and systemd (--allow-non-root to try anyway)"
        )
    if not args.asterisk_dir.is_dir():
        fail(f"no Asterisk configuration directory at {args.asterisk_dir} (--asterisk-dir)")


def _exec_start() -> str:
    script = Path(sys.executable).parent / "fastagi"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fastagi"]
    return shlex.join([*command, "serve"])


def _group_of(user: str, group: str | None) -> str:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        fail(f"no user {user!r} on this host: name the user Asterisk runs as (--asterisk-user)")
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            fail(f"no group {group!r} on this host (--asterisk-group)")
        return group
    return grp.getgrgid(entry.pw_gid).gr_name


def run_install(args: argparse.Namespace) -> int:
    _preflight(args)
    unit = args.unit_path if args.systemd else None
    snapshot = apply.snapshot(
        args.asterisk_dir,
        args.config,
        unit,
        [args.tts_dir, args.recordings_dir, args.recordings_dir / INCOMING, args.journal_dir],
    )
    if not args.force:
        try:
            check_shape(_absolute(args.asterisk_dir), snapshot.asterisk)
        except PlanError as exc:
            fail(str(exc))
    user = args.asterisk_user or asterisk_user(snapshot) or "asterisk"
    request = InstallRequest(
        asterisk_dir=_absolute(args.asterisk_dir),
        config=_absolute(args.config),
        agi_url=args.agi_url,
        agi_url2=args.agi_url2,
        ami_username=args.ami_user,
        tts_directory=_absolute(args.tts_dir),
        tts_asterisk_directory=args.tts_asterisk_dir,
        recordings_directory=_absolute(args.recordings_dir),
        recordings_asterisk_directory=args.recordings_asterisk_dir,
        journal_directory=_absolute(args.journal_dir),
        asterisk_user=user,
        asterisk_group=_group_of(user, args.asterisk_group),
        new_secret=secrets.token_urlsafe(SECRET_BYTES),
        dsn=args.dsn,
        unit=_absolute(unit) if unit is not None else None,
        exec_start=_exec_start(),
        watchdog_sec=args.watchdog_sec,
        force=args.force,
        feature_codes=args.feature_codes == "dialplan",
    )
    try:
        plan = plan_install(request, snapshot)
    except (PlanError, blocks.BlockError) as exc:
        fail(str(exc))
    plan.notes.extend(_readable_secret(args.asterisk_dir / MANAGER_CUSTOM))
    return _execute(plan, args, unit_written=unit is not None, installing=True)


def _readable_secret(path: Path) -> list[str]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return []
    if mode & 0o004:
        return [f"{path} is readable by every local user, and so is the AMI secret in it"]
    return []


def run_uninstall(args: argparse.Namespace) -> int:
    _preflight(args)
    snapshot = apply.snapshot(args.asterisk_dir, args.config, args.unit_path)
    request = UninstallRequest(
        asterisk_dir=_absolute(args.asterisk_dir),
        config=_absolute(args.config),
        unit=_absolute(args.unit_path),
    )
    try:
        plan = plan_uninstall(request, snapshot)
    except (PlanError, blocks.BlockError) as exc:
        fail(str(exc))
    plan.notes.extend(_directories_left(snapshot.config))
    unit_removed = any(c.path == request.unit and c.after is None for c in plan.changes)
    if unit_removed and not args.dry_run and apply.systemd_running():
        result = apply.run(["systemctl", "disable", "--now", args.unit_path.name])
        if result.returncode != 0:
            print(f"note: systemctl disable --now failed: {result.stderr.strip()}")
    return _execute(plan, args, unit_written=unit_removed, installing=False)


def _directories_left(config: str | None) -> list[str]:
    if config is None:
        return []
    try:
        data = tomllib.loads(config)
    except tomllib.TOMLDecodeError:
        return []
    left = [
        str(section.get("directory"))
        for section in (data.get("tts", {}), data.get("recording", {}), data.get("journal", {}))
        if isinstance(section, dict) and section.get("directory")
    ]
    return [f"left in place (remove by hand when done): {', '.join(left)}"] if left else []


def _execute(plan: Plan, args: argparse.Namespace, *, unit_written: bool, installing: bool) -> int:
    for note in plan.notes:
        print(f"note: {note}")
    commands = (
        []
        if args.no_reload
        else apply.reload_commands(
            shlex.split(args.asterisk_command) if args.asterisk_command else None
        )
    )
    if args.dry_run:
        _print_dry_run(plan, commands)
        return 0
    if plan.empty:
        print("nothing to change: " + ("already installed" if installing else "not installed"))
        return 0
    try:
        apply.carry_out(plan, print)
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
    if not commands and not args.no_reload:
        print("note: neither fwconsole nor asterisk found: reload Asterisk yourself")
    status = _reload(commands)
    if unit_written and apply.systemd_running():
        apply.run(["systemctl", "daemon-reload"])
        print("ran systemctl daemon-reload")
    if installing and unit_written:
        print(f"next: systemctl enable --now {args.unit_path.name}")
    if installing:
        print(
            "next: a BLF key for *559 on the security desk's phone is the health lamp"
            " (Custom:PANIC_HEALTH): lit while a scheduled check keeps failing, and"
            " `fastagi check` says which"
        )
    return status


def _print_dry_run(plan: Plan, commands: list[list[str]]) -> None:
    for directory in plan.dirs:
        owner = directory.owner or "root"
        print(f"# would create {directory.path}/ (mode {directory.mode:o}, owner {owner})")
    for change in plan.changes:
        sys.stdout.write(unified_diff(change, plan.secrets))
    if not plan.empty:
        for command in commands:
            print(f"# would run: {shlex.join(command)}")


def _reload(commands: list[list[str]]) -> int:
    status = 0
    for command in commands:
        result = apply.run(command)
        if result.returncode != 0:
            output = " / ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            print(f"fastagi: error: `{shlex.join(command)}` failed: {output}", file=sys.stderr)
            status = 1
        else:
            print(f"ran {shlex.join(command)}")
    return status
