"""The sandbox image: a Debian sid root file system with Asterisk, made by debootstrap.

Theory of operation: ``build_image`` bootstraps into a temporary sibling of the target
directory, checks that ``asterisk -V`` runs inside it, writes ``/etc/hosts`` and a
completion marker, then renames it into place. A directory without the marker is a
bootstrap that died half-way: it is never used, and the next build removes it.

Why sid: Debian 12 ships no Asterisk package; sid has Asterisk 22. Why no mirror
argument: debootstrap's default mirror (or the machine's apt proxy settings) is the one
the administrator trusts; the repository names no host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-modules")
MARKER_NAME = ".fastagi-sandbox-complete"
ROOTFS_ENV = "FASTAGI_SANDBOX_ROOTFS"
# Instances live inside the image so that one chroot serves them all (see instance.py).
INSTANCES_DIR_IN_CHROOT = "/fastagi/instances"


class ImageError(Exception):
    """The image is missing, incomplete, or could not be built."""


@dataclass(frozen=True)
class ImageResult:
    """What ``build_image`` did: ``built`` is False when a complete image was already there."""

    rootfs: Path
    built: bool
    seconds: float
    asterisk_version: str


def repo_root() -> Path:
    """The checkout this package runs from (``fastagi_dev/sandbox/image.py`` -> two levels up)."""
    return Path(__file__).resolve().parents[2]


def default_rootfs() -> Path:
    """``$FASTAGI_SANDBOX_ROOTFS``, else ``<repo>/.cache/sandbox/rootfs`` (ignored by git)."""
    named = os.environ.get(ROOTFS_ENV)
    if named:
        return Path(named).resolve()
    return repo_root() / ".cache" / "sandbox" / "rootfs"


def is_complete(rootfs: Path) -> bool:
    """True when ``rootfs`` is a finished image (the marker is written last)."""
    return (rootfs / MARKER_NAME).is_file()


def require_image(rootfs: Path) -> None:
    """Raise ImageError with the fix when ``rootfs`` is not a complete image."""
    if not is_complete(rootfs):
        raise ImageError(
            f"no complete sandbox image at {rootfs}: run `make sandbox-image` "
            "(or `python -m fastagi_dev sandbox image`)"
        )


def asterisk_version(rootfs: Path) -> str:
    """``asterisk -V`` run inside the chroot, e.g. ``Asterisk 22.10.1+dfsg...``."""
    result = subprocess.run(
        ["chroot", str(rootfs), "asterisk", "-V"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0 or not result.stdout.startswith("Asterisk "):
        raise ImageError(
            f"`asterisk -V` failed in {rootfs} (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-2000:]}"
        )
    return result.stdout.strip()


def hosts_file() -> str:
    """``/etc/hosts`` for the chroot: localhost plus this machine's host name.

    Without the host name Asterisk resolves it through DNS on every call; with no
    network the lookup times out and calls stall (see AGI-NOTES, "The sandbox chroot").
    """
    hostname = socket.gethostname()
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if hostname and hostname != "localhost":
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def build_image(rootfs: Path | None = None, *, force: bool = False) -> ImageResult:
    """Make sure a complete image exists at ``rootfs``; build it when it does not.

    Idempotent: a complete image is only re-verified (and its ``/etc/hosts`` refreshed,
    since the host name may have changed). ``force`` rebuilds anyway. Needs root and
    debootstrap.
    """
    rootfs = (rootfs or default_rootfs()).resolve()
    started = time.monotonic()
    if is_complete(rootfs) and not force:
        (rootfs / "etc" / "hosts").write_text(hosts_file())
        version = asterisk_version(rootfs)
        return ImageResult(rootfs, False, time.monotonic() - started, version)

    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(rootfs)
    # A sibling directory, so the final rename stays on one file system (atomic).
    work = Path(tempfile.mkdtemp(prefix=f".{rootfs.name}.build-", dir=rootfs.parent))
    try:
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(work),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = work / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise ImageError(
                f"{' '.join(command)} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}\n{detail}"
            )
        version = asterisk_version(work)
        (work / "etc" / "hosts").write_text(hosts_file())
        (work / INSTANCES_DIR_IN_CHROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (work / MARKER_NAME).write_text(f"{version}\n")
        if rootfs.exists() or rootfs.is_symlink():
            # An incomplete (or forced) old image: move it aside first, then delete it, so
            # the target path never holds a half-removed tree.
            old = rootfs.with_name(f".{rootfs.name}.old-{os.getpid()}")
            rootfs.rename(old)
            remove_tree(old)
        work.rename(rootfs)
    except BaseException:
        remove_tree(work)
        raise
    return ImageResult(rootfs, True, time.monotonic() - started, version)


def _remove_stale_builds(rootfs: Path) -> None:
    """Delete leftovers of builds that died (their directories never got renamed)."""
    for prefix in (f".{rootfs.name}.build-", f".{rootfs.name}.old-"):
        for stale in rootfs.parent.glob(f"{prefix}*"):
            remove_tree(stale)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first unmounts anything below ``path``.

    debootstrap mounts /proc (and /sys) inside the target while it installs; a build
    killed half-way leaves them mounted, and deleting through a mount is never wanted.
    """
    for mountpoint in sorted(mounts_below(path), key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below ``path``, from /proc/self/mountinfo."""
    base = path.resolve()
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        # Field 5 is the mount point, with spaces etc. as octal escapes (proc(5)).
        mountpoint = Path(fields[4].encode().decode("unicode_escape"))
        if mountpoint == base or base in mountpoint.parents:
            found.append(mountpoint)
    return found
