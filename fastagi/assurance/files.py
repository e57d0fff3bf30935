"""File permissions as another user meets them, and the journal's directory.

Blocking calls (stat, open, fsync): run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    """A user as the kernel checks permissions for it."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def of(cls, user: str, group: str | None = None) -> Identity | None:
        """``user`` (and ``group``) of this host's user database; None when unknown
        here (Asterisk in a container or chroot has its own)."""
        try:
            entry = pwd.getpwnam(user)
            gids = set(os.getgrouplist(user, entry.pw_gid))
            if group:
                gids.add(grp.getgrnam(group).gr_gid)
        except (KeyError, OSError):
            return None
        return cls(user, entry.pw_uid, frozenset(gids))


def describe(path: Path) -> str:
    """``0700 root:root`` (mode, owner, group; numbers when they have no name)."""
    try:
        info = path.stat()
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"{stat.S_IMODE(info.st_mode):04o} {_user(info.st_uid)}:{_group(info.st_gid)}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _may(info: os.stat_result, who: Identity, bits: int) -> bool:
    """Whether ``who`` has ``bits`` (a combination of 4 read, 2 write, 1 search) on a
    file: the owner's bits if it owns it, else the group's if in the group, else the
    others' (the kernel's order: a matching class that lacks the bit refuses)."""
    if who.uid == 0:
        return True
    mode = info.st_mode
    if info.st_uid == who.uid:
        granted = (mode >> 6) & 7
    elif info.st_gid in who.gids:
        granted = (mode >> 3) & 7
    else:
        granted = mode & 7
    return granted & bits == bits


def first_refusal(path: Path, who: Identity) -> Path | None:
    """The first component of ``path`` that keeps ``who`` from reading it (a directory
    it may not search, or the file it may not read), or None when it can read it."""
    parts = [*reversed(path.parents), path]
    for index, part in enumerate(parts):
        try:
            info = part.stat()
        except OSError:
            return part
        last = index == len(parts) - 1
        if not _may(info, who, 4 if last else 1):
            return part
    return None


def unreadable(paths: list[Path], who: Identity) -> list[tuple[Path, Path]]:
    """Each of ``paths`` ``who`` cannot read, with the component that refuses it."""
    found = []
    for path in paths:
        refusal = first_refusal(path, who)
        if refusal is not None:
            found.append((path, refusal))
    return found


# Unique per call, not per process: a server's health watch and a check run in the same
# process (tests, `fastagi check` beside it) may probe one directory at once, and O_EXCL
# would refuse the second ("File exists").
PROBE_NAME = ".fastagi-check-{pid}-{token}"


def try_write(directory: Path) -> str | None:
    """Create, fsync and remove a small file in ``directory``, as the journal writes;
    None when that worked, else why not. A directory that does not exist yet is
    fine when it can be created (the journal creates it), but is not created here."""
    if not directory.exists():
        ancestor = next((p for p in directory.parents if p.exists()), None)
        if ancestor is None or not os.access(ancestor, os.W_OK | os.X_OK):
            where = ancestor or Path("/")
            return f"{directory} does not exist, and {where} ({describe(where)}) is not writable"
        return None
    probe = directory / PROBE_NAME.format(pid=os.getpid(), token=secrets.token_hex(4))
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"{}\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return f"cannot write in {directory} ({describe(directory)}): {exc.strerror or exc}"
    return None


def pending_bytes(journal: Path) -> int:
    """How much history waits in the journal file (0 when there is none)."""
    try:
        return journal.stat().st_size
    except FileNotFoundError:
        return 0
