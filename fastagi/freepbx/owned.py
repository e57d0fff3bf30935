"""The files ``install`` writes whole: the dialplan, the server's config.toml and the
systemd unit. Each starts with a line saying who wrote it, which is how ``uninstall``
knows it may delete it:

- fastagi-panic.conf and the unit are ours to overwrite and delete (their first line
  says not to edit them);
- config.toml is the administrator's to edit: its first line carries the SHA-256 of the
  rest as written, and a file whose digest no longer matches was edited, so it is kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

DIALPLAN_HEADER = (
    "; Written by `fastagi freepbx install` from the fastagi-panic package. Do not edit:\n"
    "; the next install overwrites this file and `fastagi freepbx uninstall` deletes it.\n"
    "; Included by the `#include` that install put into extensions_custom.conf.\n"
)
UNIT_HEADER_START = "# Written by `fastagi freepbx install --systemd`."
CONFIG_HEADER_START = "# Written by `fastagi freepbx install`; sha256 of the lines below: "
_CONFIG_HEADER = re.compile(re.escape(CONFIG_HEADER_START) + r"([0-9a-f]{64})\n")
_PLACEHOLDER = re.compile(r"@\{([a-z_]+)\}")


# The one line of the dialplan that makes our feature codes answer in from-internal.
FEATURES_INCLUDE = "include => fastagi-panic-features\n"
FEATURES_OFF = (
    "; include => fastagi-panic-features  ; off (install --feature-codes freepbx): FreePBX's\n"
    "; Misc Applications answer the codes, through (macro|sub)-user-callerid (AMPUSER).\n"
)


class DialplanError(ValueError):
    """The package's dialplan is not as this code expects it."""


def dialplan(package_text: str, *, feature_codes: bool = True) -> str:
    """The installed copy. Without ``feature_codes``, ``[from-internal-custom]`` no longer
    includes ``[fastagi-panic-features]``: FreePBX's Misc Applications answer the codes
    and go to the Custom Destinations (README, "Feature codes FreePBX can see")."""
    if not feature_codes:
        if package_text.count(FEATURES_INCLUDE) != 1:
            raise DialplanError(
                f"the dialplan has {package_text.count(FEATURES_INCLUDE)} lines "
                f"{FEATURES_INCLUDE.strip()!r}, expected one"
            )
        package_text = package_text.replace(FEATURES_INCLUDE, FEATURES_OFF)
    return DIALPLAN_HEADER + package_text


def is_our_dialplan(text: str) -> bool:
    return text.startswith(DIALPLAN_HEADER.splitlines()[0])


def is_our_unit(text: str) -> bool:
    return text.startswith(UNIT_HEADER_START)


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Replace every ``@{name}``; an unknown name is an error, never left in the output."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @{{{key}}} has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(substitute, template)


@dataclass(frozen=True)
class UnitValues:
    exec_start: str
    config: PurePosixPath
    tts_directory: PurePosixPath
    recordings_directory: PurePosixPath
    journal_directory: PurePosixPath
    asterisk_group: str
    watchdog_sec: int


def unit(template: str, values: UnitValues) -> str:
    return render_template(
        template,
        {
            "exec_start": values.exec_start,
            "config": values.config,
            "read_write_paths": (
                f"{values.tts_directory} {values.recordings_directory} {values.journal_directory}"
            ),
            "asterisk_group": values.asterisk_group,
            "watchdog_sec": values.watchdog_sec,
        },
    )


@dataclass(frozen=True)
class ServerConfig:
    """What install knows of the server's settings; everything else keeps its default
    (docs/config.example.toml lists every setting)."""

    agi_host: str
    agi_port: int
    ami_port: int
    ami_username: str
    ami_secret: str
    tts_directory: PurePosixPath
    tts_asterisk_directory: str | None
    recordings_directory: PurePosixPath
    recordings_asterisk_directory: str | None
    journal_directory: PurePosixPath
    dsn: str | None


def _toml(value: object) -> str:
    # A JSON string (or number) is a valid TOML basic string (or integer); ensure_ascii
    # writes anything else as \\uXXXX escapes, which TOML reads the same way.
    return json.dumps(value if isinstance(value, int) else str(value))


def config_body(config: ServerConfig) -> str:
    database = (
        f"dsn = {_toml(config.dsn)}\n"
        if config.dsn
        else '# dsn = "postgresql://fastagi:PASSWORD@127.0.0.1/fastagi"   (required)\n'
    )
    asterisk_dir = (
        f"asterisk_directory = {_toml(config.tts_asterisk_directory)}\n"
        if config.tts_asterisk_directory
        else ""
    )
    recordings_asterisk_dir = (
        f"asterisk_directory = {_toml(config.recordings_asterisk_directory)}\n"
        if config.recordings_asterisk_directory
        else ""
    )
    return (
        "# The settings of `fastagi serve` (FASTAGI_CONFIG); every setting with its default:\n"
        "# docs/config.example.toml. `fastagi freepbx uninstall` deletes this file unless it\n"
        "# was edited; edit it freely (install then leaves it alone, too).\n"
        'log_level = "INFO"\n'
        "\n"
        "[agi]\n"
        f"host = {_toml(config.agi_host)}\n"
        f"port = {config.agi_port}\n"
        'allowed_networks = ["127.0.0.0/8", "::1/128"]\n'
        "\n"
        "[database]\n"
        f"{database}"
        "\n"
        "[ami]\n"
        "# The user install wrote into manager_custom.conf (loopback only).\n"
        'host = "127.0.0.1"\n'
        f"port = {config.ami_port}\n"
        f"username = {_toml(config.ami_username)}\n"
        f"secret = {_toml(config.ami_secret)}\n"
        "\n"
        "[tts]\n"
        f"directory = {_toml(config.tts_directory)}\n"
        f"{asterisk_dir}"
        "\n"
        "[recording]\n"
        f"directory = {_toml(config.recordings_directory)}\n"
        f"{recordings_asterisk_dir}"
        "\n"
        "[journal]\n"
        f"directory = {_toml(config.journal_directory)}\n"
    )


def config_file(config: ServerConfig) -> str:
    body = config_body(config)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"{CONFIG_HEADER_START}{digest}\n{body}"


def config_unedited(text: str) -> bool:
    """Whether ``text`` is a config.toml install wrote and nobody changed since."""
    match = _CONFIG_HEADER.match(text)
    if match is None:
        return False
    body = text[match.end() :]
    return hashlib.sha256(body.encode()).hexdigest() == match.group(1)
