"""The server's settings against a sandbox instance, for the dev tools and the tests: one
place that knows which of the instance's users and directories the server uses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from fastagi.config import (
    AgiSettings,
    AmiSettings,
    DatabaseSettings,
    JournalSettings,
    RecordingSettings,
    Settings,
)
from fastagi.tts import TtsSettings
from fastagi_dev.sandbox.instance import Sandbox


def ami_settings(sandbox: Sandbox, *, least: bool = False, **options: Any) -> AmiSettings:
    """The instance's AMI user; ``least``: the one with the rights ``fastagi freepbx
    install`` grants (templates/manager.conf), not every right."""
    username = sandbox.least_ami_username if least else sandbox.ami_username
    user = {
        "host": sandbox.ami_host,
        "port": sandbox.ami_port,
        "username": username,
        "secret": SecretStr(sandbox.ami_secret),
    }
    return AmiSettings(**{**user, **options})


def tts_settings(sandbox: Sandbox) -> TtsSettings:
    """The instance's prompt directory, as the server and as Asterisk (chrooted) see it."""
    return TtsSettings(directory=sandbox.tts_dir, asterisk_directory=sandbox.tts_dir_in_asterisk)


def recording_settings(sandbox: Sandbox, **options: Any) -> RecordingSettings:
    """The instance's recordings directory, as the server and as Asterisk see it."""
    return RecordingSettings(
        directory=sandbox.recordings_dir,
        asterisk_directory=sandbox.recordings_dir_in_asterisk,
        **options,
    )


def server_settings(sandbox: Sandbox, agi_port: int, dsn: str, **sections: BaseModel) -> Settings:
    """``fastagi serve`` against ``sandbox`` on ``agi_port`` over the database ``dsn``;
    ``sections`` replace whole sections (``alarm=AlarmSettings(...)``).

    The journal is kept in memory: the default directory (/var/lib/fastagi-panic/journal)
    is shared by every run on the machine, and would replay one's events into another's
    database.
    """
    # Through __init__, as the server reads them: FASTAGI_* variables still apply.
    chosen: dict[str, Any] = {
        "journal": JournalSettings(directory=None),
        "agi": AgiSettings(port=agi_port),
        "database": DatabaseSettings(dsn=SecretStr(dsn)),
        "ami": ami_settings(sandbox),
        "tts": tts_settings(sandbox),
        "recording": recording_settings(sandbox),
        **sections,
    }
    return Settings(**chosen)
