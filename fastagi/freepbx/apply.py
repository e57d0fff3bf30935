"""The I/O of ``fastagi freepbx install``/``uninstall``: read the files the plan needs,
write what it says (each file replaced atomically, its owner and mode kept), and reload
Asterisk.

Reload: ``fwconsole reload`` on FreePBX (it regenerates extensions_additional.conf, the
file that includes globals_custom.conf, and reloads Asterisk over AMI); on a plain
Asterisk the two modules whose files changed, ``dialplan reload`` (pbx_config:
extensions.conf and its [globals]) and ``manager reload`` (the users of manager.conf).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from fastagi.freepbx import conffile
from fastagi.freepbx.plan import DIALPLAN, DirChange, FileChange, Plan, Snapshot

PACKAGE = "fastagi.freepbx"
UNIT_TEMPLATE = "fastagi-panic.service"
RELOAD_TIMEOUT = 120.0


def package_text(name: str) -> str:
    """A data file of this package (the dialplan, the unit template)."""
    return (resources.files(PACKAGE) / name).read_text()


def _read(path: Path) -> str | None:
    try:
        return conffile.decode(path.read_bytes())
    except FileNotFoundError:
        return None


def snapshot(
    asterisk_dir: Path, config: Path, unit: Path | None, dirs: Iterable[Path] = ()
) -> Snapshot:
    asterisk = {
        path.name: conffile.decode(path.read_bytes())
        for path in sorted(asterisk_dir.glob("*.conf"))
        if path.is_file()
    }
    return Snapshot(
        asterisk=asterisk,
        config=_read(config),
        unit=_read(unit) if unit is not None else None,
        existing_dirs=frozenset(PurePosixPath(d) for d in {*dirs, config.parent} if d.is_dir()),
        dialplan=package_text(DIALPLAN),
        unit_template=package_text(UNIT_TEMPLATE),
    )


@dataclass(frozen=True)
class Ids:
    uid: int
    gid: int


def ids(user: str | None, group: str | None) -> Ids | None:
    """The uid and gid of ``user`` (and ``group``, else the user's own group)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group is not None else entry.pw_gid
    return Ids(entry.pw_uid, gid)


def _chown(path: Path, owner: Ids | None) -> None:
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)


def make_dir(change: DirChange) -> None:
    path = Path(change.path)
    path.mkdir(parents=True, exist_ok=True)
    _chown(path, ids(change.owner, change.group))
    # After chown, which clears the set-group-ID bit.
    path.chmod(change.mode)


def write_file(change: FileChange) -> None:
    """Replace the file atomically (a temporary file in the same directory, fsync'd,
    renamed over it); an existing file keeps its owner and mode, a new one gets the
    plan's. A symbolic link is followed, not replaced."""
    path = Path(os.path.realpath(change.path))
    if change.after is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _sync_dir(path.parent)
        return
    try:
        existing: os.stat_result | None = path.stat()
    except FileNotFoundError:
        existing = None
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(conffile.encode(change.after))
            out.flush()
            os.fsync(out.fileno())
        if existing is not None:
            _chown(Path(temporary), Ids(existing.st_uid, existing.st_gid))
            os.chmod(temporary, existing.st_mode & 0o7777)
        else:
            _chown(Path(temporary), ids(change.owner, change.group))
            os.chmod(temporary, change.mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def carry_out(plan: Plan, say: Callable[[str], None]) -> None:
    for directory in plan.dirs:
        make_dir(directory)
        say(f"created {directory.path}/ (mode {directory.mode:o})")
    for change in plan.changes:
        write_file(change)
        say(f"{change.action}d {change.path}")


def reload_commands(
    asterisk_command: list[str] | None, which: Callable[[str], str | None] = shutil.which
) -> list[list[str]]:
    """How to make Asterisk read the files again."""
    if asterisk_command:
        prefix = asterisk_command
    elif which("fwconsole"):
        return [["fwconsole", "reload"]]
    elif which("asterisk"):
        prefix = ["asterisk"]
    else:
        return []
    return [[*prefix, "-rx", "dialplan reload"], [*prefix, "-rx", "manager reload"]]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=RELOAD_TIMEOUT
    )


def systemd_running() -> bool:
    """sd_booted(3): systemd is the init system of this host."""
    return Path("/run/systemd/system").is_dir()
