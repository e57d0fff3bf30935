"""Our server as of a git commit, beside this checkout's: the ``ours@REF`` of the benches'
A/B runs (``bench.agi_load``, ``bench.calls``).

The commit's files are unpacked with ``git archive`` into a directory of their own; a
server started with that directory as its working directory (``python -m``, which puts it
first on ``sys.path``) imports that ``fastagi``, while the bench's own code stays this
checkout's.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OURS = "ours"


def parse_server(spec: str, names: Sequence[str]) -> tuple[str, str | None]:
    """``NAME`` (one of ``names``) or ``ours@REF``: the name and the ref (None: this
    checkout's). ValueError for anything else."""
    name, at, ref = spec.partition("@")
    if name not in names or (at and (name != OURS or not ref)):
        raise ValueError(f"unknown server {spec!r}: one of {', '.join(names)}, or ours@REF")
    return name, ref or None


def export_tree(ref: str, into: Path, paths: Sequence[str]) -> str:
    """Unpack ``paths`` as of git ``ref`` under ``into``; return the commit's short hash."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True
        ).stdout

    commit = git("rev-parse", "--short", f"{ref}^{{commit}}").decode().strip()
    with tarfile.open(fileobj=io.BytesIO(git("archive", commit, *paths))) as tar:
        tar.extractall(into, filter="data")
    return commit
