"""Plan ``fastagi freepbx install`` and ``uninstall``: from what the files say now, what
each should say afterwards. Pure: the caller reads the files (``apply.snapshot``) and
carries the plan out (``apply.carry_out``), so every decision here is tested without a
file system.

What install does to a FreePBX tree (FreePBX writes extensions.conf, manager.conf and
extensions_additional.conf and leaves the ``*_custom.conf`` files to the administrator):

- ``fastagi-panic.conf`` (ours, whole): the dialplan of the package, with a header;
- ``extensions_custom.conf``: a marker block with ``#include fastagi-panic.conf``
  (FreePBX's extensions.conf includes extensions_custom.conf; its ``[from-internal-xfer]``
  includes ``[from-internal-custom]``, which our dialplan extends with the feature codes);
- ``globals_custom.conf``: a block setting ``FASTAGI_PANIC_URL`` (included inside the
  ``[globals]`` that FreePBX generates into extensions_additional.conf);
- ``manager_custom.conf``: a block with our AMI user (manager.conf includes it last);
- the server's config.toml (mode 0600) with that user's secret, and with ``--systemd``
  the unit.

A second install with the same request plans no change, and keeps the secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from fastagi.config.recording import DEFAULT_DIRECTORY as DEFAULT_RECORDINGS_DIRECTORY
from fastagi.config.recording import INCOMING
from fastagi.freepbx import ami_user, blocks, conffile, owned

EXTENSIONS = "extensions.conf"
EXTENSIONS_CUSTOM = "extensions_custom.conf"
GLOBALS_CUSTOM = "globals_custom.conf"
MANAGER = "manager.conf"
MANAGER_CUSTOM = "manager_custom.conf"
DIALPLAN = "fastagi-panic.conf"
ASTERISK_CONF = "asterisk.conf"
DEFAULT_AMI_PORT = 5038
DEFAULT_AGI_PORT = 4573
# Contexts of our dialplan: found outside our block, they were pasted by hand (the
# install procedure before this command) and would clash with the included file.
_OUR_CONTEXT = re.compile(r"^(fastagi-panic-|panic-alarm$)")
_URL = re.compile(r"^agi://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?/?$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEFAULT_RECORDINGS = PurePosixPath(DEFAULT_RECORDINGS_DIRECTORY)
_LOOPBACK_OR_ANY = frozenset({"", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"})


class PlanError(Exception):
    """Install or uninstall cannot go on; the message says why, in one line."""


@dataclass(frozen=True)
class FileChange:
    path: PurePosixPath
    before: str | None  # None: the file does not exist
    after: str | None  # None: the file is deleted
    # For a file that is created: its mode, and who owns it (None: whoever runs install).
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None

    @property
    def action(self) -> str:
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"


@dataclass(frozen=True)
class DirChange:
    path: PurePosixPath
    mode: int
    owner: str | None
    group: str | None


@dataclass
class Plan:
    files: list[FileChange] = field(default_factory=list)
    dirs: list[DirChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Shown as ******** wherever a diff would print them.
    secrets: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[FileChange]:
        return [change for change in self.files if change.before != change.after]

    @property
    def empty(self) -> bool:
        return not self.changes and not self.dirs


@dataclass(frozen=True)
class InstallRequest:
    asterisk_dir: PurePosixPath
    config: PurePosixPath
    agi_url: str
    ami_username: str
    tts_directory: PurePosixPath
    journal_directory: PurePosixPath
    asterisk_user: str
    asterisk_group: str
    # Used only when neither manager_custom.conf nor config.toml holds one already.
    new_secret: str
    agi_url2: str | None = None
    tts_asterisk_directory: str | None = None
    # Recorded locations (*557): Record() writes into its incoming/ as Asterisk's user.
    recordings_directory: PurePosixPath = _DEFAULT_RECORDINGS
    recordings_asterisk_directory: str | None = None
    dsn: str | None = None
    unit: PurePosixPath | None = None  # write the systemd unit there
    exec_start: str = "/opt/fastagi-panic/bin/fastagi serve"
    watchdog_sec: int = 10
    force: bool = False  # install into a tree that does not look like FreePBX's
    # False: FreePBX's Misc Applications answer *555/*556/*599 (owned.dialplan).
    feature_codes: bool = True


@dataclass(frozen=True)
class Snapshot:
    """What the files say now."""

    asterisk: Mapping[str, str]  # every *.conf of the Asterisk directory, by file name
    config: str | None
    unit: str | None
    existing_dirs: frozenset[PurePosixPath]
    dialplan: str  # the package's
    unit_template: str  # the package's


def asterisk_user(snapshot: Snapshot) -> str | None:
    """``runuser`` of asterisk.conf: the user Asterisk runs as (FreePBX: asterisk)."""
    runuser = conffile.section_values(snapshot.asterisk.get(ASTERISK_CONF, ""), "options").get(
        "runuser"
    )
    return runuser[-1] if runuser else None


def freepbx_shape_problems(asterisk: Mapping[str, str]) -> list[str]:
    """Why the tree is not FreePBX's (empty when it is)."""
    problems = []
    extensions = asterisk.get(EXTENSIONS)
    if extensions is None:
        problems.append("no extensions.conf")
    else:
        if EXTENSIONS_CUSTOM not in conffile.includes(extensions):
            problems.append("extensions.conf does not #include extensions_custom.conf")
        if not any(
            "from-internal-custom" in conffile.context_includes(extensions, section.text)
            for section in conffile.sections(extensions)
        ):
            problems.append("no context of extensions.conf includes from-internal-custom")
    if not any(GLOBALS_CUSTOM in conffile.includes(text) for text in asterisk.values()):
        problems.append("no file #includes globals_custom.conf")
    manager = asterisk.get(MANAGER)
    if manager is None:
        problems.append("no manager.conf")
    elif MANAGER_CUSTOM not in conffile.includes(manager):
        problems.append("manager.conf does not #include manager_custom.conf")
    return problems


def check_shape(asterisk_dir: PurePosixPath, asterisk: Mapping[str, str]) -> None:
    problems = freepbx_shape_problems(asterisk)
    if problems:
        raise PlanError(
            f"{asterisk_dir} does not look like FreePBX's: {'; '.join(problems)} "
            "(--force installs anyway)"
        )


def ami_port(asterisk: Mapping[str, str]) -> int:
    """The AMI port of manager.conf's ``[general]``; refuses an AMI that loopback cannot
    reach (disabled, or bound to one other address)."""
    general = conffile.section_values(asterisk.get(MANAGER, ""), "general")
    enabled = general.get("enabled", ["yes"])[-1].lower()
    if enabled not in {"yes", "true", "y", "t", "1", "on"}:
        raise PlanError("AMI is disabled (manager.conf [general] enabled): the server needs it")
    bindaddr = general.get("bindaddr", [""])[-1]
    if bindaddr not in _LOOPBACK_OR_ANY:
        raise PlanError(
            f"AMI listens on {bindaddr} only (manager.conf bindaddr): a loopback-only user "
            "could not connect"
        )
    try:
        return int(general.get("port", [str(DEFAULT_AMI_PORT)])[-1])
    except ValueError:
        raise PlanError("manager.conf [general] port is not a number") from None


def parse_agi_url(url: str) -> tuple[str, int]:
    """Host and port of ``agi://host[:port]``: where the server listens."""
    if not _URL.match(url):
        raise PlanError(f"not an AGI URL like agi://127.0.0.1:4573: {url!r}")
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise PlanError(f"the AGI URL must name an IP address, not {host!r}") from None
    return host, parts.port or DEFAULT_AGI_PORT


def globals_block(request: InstallRequest) -> str:
    lines = [f"FASTAGI_PANIC_URL = {request.agi_url}"]
    if request.agi_url2:
        lines.append(f"FASTAGI_PANIC_URL2 = {request.agi_url2}")
    return "\n".join(lines) + "\n"


def _ours_in(name: str, text: str | None) -> str | None:
    """The body of our block in ``text``, or None."""
    if text is None:
        return None
    block = blocks.find(text, name)
    return None if block is None else block.body


def _check_conflicts(request: InstallRequest, asterisk: Mapping[str, str]) -> list[str]:
    notes = []
    custom = asterisk.get(EXTENSIONS_CUSTOM)
    if custom is not None:
        pasted = [
            s
            for s in conffile.sections(blocks.outside(custom, EXTENSIONS_CUSTOM))
            if _OUR_CONTEXT.match(s.text)
        ]
        if pasted:
            where = ", ".join(f"[{s.text}] line {s.number}" for s in pasted)
            raise PlanError(
                f"extensions_custom.conf holds a pasted copy of the fastagi-panic dialplan "
                f"({where}): remove it, install puts the dialplan in fastagi-panic.conf"
            )
    for name, text in sorted(asterisk.items()):
        if not name.startswith("manager"):
            continue
        clash = [
            s
            for s in conffile.sections(blocks.outside(text, name))
            if s.text == request.ami_username
        ]
        if clash:
            raise PlanError(
                f"{name} line {clash[0].number} already defines the AMI user "
                f"[{request.ami_username}]: choose another with --ami-user"
            )
    globals_text = asterisk.get(GLOBALS_CUSTOM)
    if globals_text is not None:
        for variable in ("FASTAGI_PANIC_URL", "FASTAGI_PANIC_URL2"):
            lines = conffile.global_assignments(
                blocks.outside(globals_text, GLOBALS_CUSTOM), variable
            )
            if lines:
                notes.append(
                    f"globals_custom.conf line {lines[0]} sets {variable} too; the value in "
                    "our block, later in the file, wins: remove that line"
                )
    return notes


def _secret(request: InstallRequest, asterisk: Mapping[str, str], config: str | None) -> str:
    body = _ours_in(MANAGER_CUSTOM, asterisk.get(MANAGER_CUSTOM))
    if body is not None and (secret := ami_user.secret_in(body)):
        return secret
    ami = _config_ami(config)
    if ami.get("username") == request.ami_username and ami.get("secret"):
        return str(ami["secret"])
    return request.new_secret


def _config_ami(config: str | None) -> dict[str, object]:
    if config is None:
        return {}
    try:
        data = tomllib.loads(config)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"the settings file does not parse: {exc}") from None
    ami = data.get("ami", {})
    return ami if isinstance(ami, dict) else {}


def _asterisk_file(
    request: InstallRequest, asterisk: Mapping[str, str], name: str, body: str, mode: int
) -> FileChange:
    before = asterisk.get(name)
    return FileChange(
        request.asterisk_dir / name,
        before,
        blocks.put(before, body, name),
        mode=mode,
        owner=request.asterisk_user,
        group=request.asterisk_group,
    )


def plan_install(request: InstallRequest, snapshot: Snapshot) -> Plan:
    asterisk = snapshot.asterisk
    if not _USERNAME.match(request.ami_username):
        raise PlanError(f"not an AMI user name: {request.ami_username!r}")
    for url in filter(None, (request.agi_url, request.agi_url2)):
        parse_agi_url(url)
    agi_host, agi_port = parse_agi_url(request.agi_url)
    if not request.force:
        check_shape(request.asterisk_dir, asterisk)
    plan = Plan(notes=_check_conflicts(request, asterisk))
    port = ami_port(asterisk)
    secret = _secret(request, asterisk, snapshot.config)
    plan.secrets.append(secret)

    dialplan_before = asterisk.get(DIALPLAN)
    if dialplan_before is not None and not owned.is_our_dialplan(dialplan_before):
        raise PlanError(f"{request.asterisk_dir / DIALPLAN} exists and was not written by install")
    plan.files.append(
        FileChange(
            request.asterisk_dir / DIALPLAN,
            dialplan_before,
            _dialplan(snapshot.dialplan, request.feature_codes),
            owner=request.asterisk_user,
            group=request.asterisk_group,
        )
    )
    plan.files.append(
        _asterisk_file(request, asterisk, EXTENSIONS_CUSTOM, f"#include {DIALPLAN}\n", 0o644)
    )
    plan.files.append(
        _asterisk_file(request, asterisk, GLOBALS_CUSTOM, globals_block(request), 0o644)
    )
    plan.files.append(
        _asterisk_file(
            request, asterisk, MANAGER_CUSTOM, ami_user.render(request.ami_username, secret), 0o640
        )
    )
    if request.force:
        for name, includer in (
            (EXTENSIONS_CUSTOM, EXTENSIONS),
            (MANAGER_CUSTOM, MANAGER),
            (GLOBALS_CUSTOM, "extensions.conf's [globals]"),
        ):
            if not any(name in conffile.includes(text) for text in asterisk.values()):
                plan.notes.append(f"nothing includes {name}: add `#include {name}` to {includer}")

    config = owned.ServerConfig(
        agi_host=agi_host,
        agi_port=agi_port,
        ami_port=port,
        ami_username=request.ami_username,
        ami_secret=secret,
        tts_directory=request.tts_directory,
        tts_asterisk_directory=request.tts_asterisk_directory,
        recordings_directory=request.recordings_directory,
        recordings_asterisk_directory=request.recordings_asterisk_directory,
        journal_directory=request.journal_directory,
        dsn=request.dsn,
    )
    if request.dsn:
        plan.secrets.extend(_dsn_password(request.dsn))
    plan.files.extend(_config_change(request, snapshot.config, owned.config_file(config), secret))
    plan.files.extend(_unit_change(request, snapshot))
    plan.dirs.extend(_dir_changes(request, snapshot))
    return plan


def _unit_change(request: InstallRequest, snapshot: Snapshot) -> list[FileChange]:
    if request.unit is None:
        return []
    before = snapshot.unit
    if before is not None and not owned.is_our_unit(before):
        raise PlanError(f"{request.unit} exists and was not written by install")
    values = owned.UnitValues(
        exec_start=request.exec_start,
        config=request.config,
        tts_directory=request.tts_directory,
        recordings_directory=request.recordings_directory,
        journal_directory=request.journal_directory,
        asterisk_group=request.asterisk_group,
        watchdog_sec=request.watchdog_sec,
    )
    return [FileChange(request.unit, before, owned.unit(snapshot.unit_template, values))]


def _dir_changes(request: InstallRequest, snapshot: Snapshot) -> list[DirChange]:
    """The prompt, recordings (and its incoming/, where Record() writes as Asterisk's
    user) and journal directories (Asterisk's user and group, group-writable, set-group-ID
    so every file in them is Asterisk's group), and the settings' one."""
    dirs = [
        DirChange(directory, 0o2770, request.asterisk_user, request.asterisk_group)
        for directory in (
            request.tts_directory,
            request.recordings_directory,
            request.recordings_directory / INCOMING,
            request.journal_directory,
        )
        if directory not in snapshot.existing_dirs
    ]
    if request.config.parent not in snapshot.existing_dirs:
        dirs.append(DirChange(request.config.parent, 0o700, None, None))
    return dirs


def _dialplan(package_text: str, feature_codes: bool) -> str:
    try:
        return owned.dialplan(package_text, feature_codes=feature_codes)
    except owned.DialplanError as exc:
        raise PlanError(str(exc)) from None


def _dsn_password(dsn: str) -> list[str]:
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return []
    return [password] if password else []


def _config_change(
    request: InstallRequest, before: str | None, desired: str, secret: str
) -> list[FileChange]:
    if before is None or owned.config_unedited(before):
        return [FileChange(request.config, before, desired, mode=0o600)]
    # Edited by the administrator: theirs now. It must still log in as our user.
    ami = _config_ami(before)
    if ami.get("username") != request.ami_username or ami.get("secret") != secret:
        raise PlanError(
            f"{request.config} was edited since install and its [ami] username/secret differ "
            f"from the user in manager_custom.conf: make them agree, or delete the file to "
            "have it written again"
        )
    return [FileChange(request.config, before, before, mode=0o600)]


@dataclass(frozen=True)
class UninstallRequest:
    asterisk_dir: PurePosixPath
    config: PurePosixPath
    unit: PurePosixPath


def plan_uninstall(request: UninstallRequest, snapshot: Snapshot) -> Plan:
    plan = Plan()
    asterisk = snapshot.asterisk
    if snapshot.unit is not None:
        if owned.is_our_unit(snapshot.unit):
            plan.files.append(FileChange(request.unit, snapshot.unit, None))
        else:
            plan.notes.append(f"left {request.unit}: not written by install")
    if snapshot.config is not None:
        plan.secrets.extend(
            str(v) for k, v in _config_ami(snapshot.config).items() if k == "secret"
        )
        if owned.config_unedited(snapshot.config):
            plan.files.append(FileChange(request.config, snapshot.config, None))
        else:
            plan.notes.append(f"kept {request.config}: edited since install; delete it by hand")
    for name in (MANAGER_CUSTOM, GLOBALS_CUSTOM, EXTENSIONS_CUSTOM):
        before = asterisk.get(name)
        if before is None:
            continue
        if name == MANAGER_CUSTOM and (body := _ours_in(name, before)):
            plan.secrets.extend(filter(None, [ami_user.secret_in(body)]))
        plan.files.append(
            FileChange(request.asterisk_dir / name, before, blocks.remove(before, name))
        )
    dialplan = asterisk.get(DIALPLAN)
    if dialplan is not None:
        if owned.is_our_dialplan(dialplan):
            plan.files.append(FileChange(request.asterisk_dir / DIALPLAN, dialplan, None))
        else:
            plan.notes.append(f"left {request.asterisk_dir / DIALPLAN}: not written by install")
    return plan


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def unified_diff(change: FileChange, secrets: list[str]) -> str:
    """The change as ``diff -u`` prints it, secrets replaced by ``********``."""
    before = redact(change.before or "", secrets).splitlines(keepends=True)
    after = redact(change.after or "", secrets).splitlines(keepends=True)
    for lines in (before, after):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n\\ No newline at end of file\n"
    return "".join(
        difflib.unified_diff(
            before,
            after,
            fromfile="/dev/null" if change.before is None else str(change.path),
            tofile="/dev/null" if change.after is None else str(change.path),
        )
    )
