"""``fastagi recording upload / list / play / delete`` against a real PostgreSQL and a
recordings directory of the test's own."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from tests.db.test_admin_cli import Cli

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]


@pytest.fixture
def fastagi(
    database_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Cli:
    # An empty settings file: the defaults, and the directory below.
    monkeypatch.setenv("FASTAGI_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("FASTAGI_RECORDING__DIRECTORY", str(tmp_path / "locations"))
    return Cli(database_dsn, capsys)


def write_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x10\x00" * int(rate * seconds))
    return path


def test_upload_list_play_delete(fastagi: Cli, tmp_path: Path) -> None:
    fastagi.ok("department", "add", "Ward")
    out = fastagi.ok(
        "recording", "upload", str(write_wav(tmp_path / "a.wav", 2.0)), "--extension", "101"
    )
    assert out == "recorded location of extension 101: 2.0 s\n"
    fastagi.ok(
        "recording", "upload", str(write_wav(tmp_path / "b.wav", 1.0)), "--department", "Ward"
    )
    [own, ward] = json.loads(fastagi.ok("recording", "list", "--json"))
    assert (own["extension"], own["seconds"], own["recorded_by"][:4]) == ("101", 2.0, "cli:")
    assert (ward["department"], ward["seconds"]) == ("Ward", 1.0)

    path = Path(fastagi.ok("recording", "play", "--extension", "101").strip())
    assert path == tmp_path / "locations" / own["file"]
    assert path.read_bytes() == (tmp_path / "a.wav").read_bytes()

    assert fastagi.ok("recording", "delete", "--extension", "101") == (
        "deleted the recorded location of extension 101\n"
    )
    assert not path.exists()
    code, _, err = fastagi("recording", "play", "--extension", "101")
    assert (code, err) == (2, "fastagi: error: no recording for 101\n")


def test_a_file_asterisk_cannot_play_is_refused(fastagi: Cli, tmp_path: Path) -> None:
    code, _, err = fastagi(
        "recording",
        "upload",
        str(write_wav(tmp_path / "a.wav", 2.0, rate=16000)),
        "--extension",
        "101",
    )
    assert code == 2
    assert "16000 Hz" in err
    assert "sox" in err
