"""``fastagi check``'s reading of file permissions as another user meets them (Asterisk's,
for the prompts), on real files, compared with what the kernel itself says when that
user tries."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastagi.assurance.files import Identity, first_refusal, try_write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of others")


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path lies under root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fastagi-check-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def nobody() -> Identity:
    who = Identity.of("nobody")
    assert who is not None
    return who


def kernel_lets_read(path: Path, who: Identity) -> bool:
    """What the kernel answers when ``who`` opens ``path``: the truth to compare with."""
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={who.uid}",
            f"--regid={min(who.gids)}",
            "--clear-groups",
            "cat",
            str(path),
        ],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.parametrize(
    ("directory_mode", "directory_owner", "file_mode", "refused_at"),
    [
        (0o755, 0, 0o644, None),
        (0o700, 0, 0o644, "directory"),  # root's 0700 directory: nobody may not enter
        (0o711, 0, 0o600, "file"),  # may enter, may not read root's 0600 file
        (0o700, "nobody", 0o644, None),  # its own 0700 directory
        (0o070, "nobody", 0o644, "directory"),  # the owner's bits decide, not the group's
    ],
)
def test_the_first_component_that_refuses_matches_the_kernel(
    open_tmp: Path,
    nobody: Identity,
    directory_mode: int,
    directory_owner: int | str,
    file_mode: int,
    refused_at: str | None,
) -> None:
    directory = open_tmp / "sounds"
    directory.mkdir()
    prompt = directory / "tts-0.sln"
    prompt.write_bytes(b"\0\0")
    prompt.chmod(file_mode)
    owner = nobody.uid if directory_owner == "nobody" else int(directory_owner)
    os.chown(directory, owner, 0)
    directory.chmod(directory_mode)

    refusal = first_refusal(prompt, nobody)
    expected = {None: None, "directory": directory, "file": prompt}[refused_at]
    assert refusal == expected
    assert kernel_lets_read(prompt, nobody) == (refusal is None)


def test_writing_the_journal_directory(tmp_path: Path) -> None:
    assert try_write(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert try_write(tmp_path / "not" / "yet") is None  # creatable: the journal creates it
    a_file = tmp_path / "file"
    a_file.write_text("")
    a_file.chmod(0o644)
    problem = try_write(a_file)
    assert problem is not None
    assert problem.startswith(f"cannot write in {a_file} (0644 root:root): Not a directory")
