"""One sandbox Asterisk: a config directory rendered from templates, run inside the image.

Layout: an instance named ``N`` lives in ``<rootfs>/fastagi/instances/N/`` (Asterisk sees
``/fastagi/instances/N/``), so any number of instances share one image::

    etc/          asterisk.conf and friends, rendered from fastagi_dev/sandbox/templates/,
                  plus a copy of the repository's extensions_custom.conf
    run/ lib/ spool/ log/ cache/   Asterisk's writable directories
    sounds/       text-to-speech prompts (``tts_dir`` on the host, ``tts_dir_in_asterisk``)
    locations/    recorded locations of *557 (``recordings_dir``, ``recordings_dir_in_asterisk``)
    console.log   Asterisk's stdout and stderr (``log_path``)
    state.json    pid, ports and AMI secret of the running process (read by the CLI)

Nothing is mounted into the chroot: Asterisk 22 starts and places calls without /proc,
/sys or /dev/pts (the debootstrap image has the static /dev nodes it needs, null and
urandom), so a crashed test leaves no mount behind. Asterisk runs as root in the chroot
(no -U), in the foreground (-f), as our child: ``stop()`` reaps it. When started with
``die_with_parent`` (the default), ``setpriv --pdeathsig TERM`` makes the kernel stop it
if the Python process dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from fastagi.freepbx import ami_user
from fastagi_dev.sandbox.ami import AmiClient, AmiError, wait_fully_booted
from fastagi_dev.sandbox.image import (
    INSTANCES_DIR_IN_CHROOT,
    default_rootfs,
    repo_root,
    require_image,
)

logger = logging.getLogger(__name__)

AMI_USERNAME = "fastagi"
DEFAULT_AGI_URL = "agi://127.0.0.1:4573"
DESK_PHONES = range(100, 200)
PAGING_PHONES = range(200, 300)
STATE_FILE = "state.json"
# How long an orphaned Asterisk gets to shut down on SIGTERM before SIGKILL.
ORPHAN_GRACE_SECONDS = 5.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Placeholders look like @{name}: neither ${...} (dialplan variables) nor {...} (pjsip.conf
# and dialplan use braces) may be touched, so string.Template and str.format do not fit.
_PLACEHOLDER = re.compile(r"@\{([a-z_]+)\}")
_WRITABLE_DIRS = (
    *("etc", "run", "lib", "lib/keys", "spool", "log", "cache", "agi-bin", "sounds"),
    "locations/incoming",  # as fastagi freepbx install makes it
)


class SandboxError(Exception):
    """The sandbox could not start, stop or answer; the message says why."""


@dataclass(frozen=True)
class SandboxPorts:
    """Every port an instance binds (all on 127.0.0.1), plus where paging phones listen.

    Paging phone 2NN is expected at ``phone_base + 2NN`` (a SIPp UAS in tests). A phone
    that calls (a SIPp UAC) binds one of the ``caller_count`` UDP ports from
    ``caller_start`` (``Sandbox.caller_port``); with none, a port the kernel picks.
    """

    sip: int = 5060
    ami: int = 5038
    rtp_start: int = 10000
    rtp_end: int = 10999
    phone_base: int = 5000
    caller_start: int = 0
    caller_count: int = 0

    def phone_port(self, extension: int) -> int:
        return self.phone_base + extension


def render(template: str, values: Mapping[str, object]) -> str:
    """Replace every ``@{name}``; an unknown name is an error, never left in the output."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @{{{key}}} has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(substitute, template)


# The FreePBX flavour's files, rendered over the default ones: the shape of FreePBX's
# /etc/asterisk (extensions.conf including extensions_custom.conf, globals_custom.conf
# inside [globals], manager.conf including manager_custom.conf), without our dialplan,
# which `fastagi freepbx install` adds.
FREEPBX_FLAVOUR = "freepbx"


def template_names(flavour: str | None = None) -> list[str]:
    folder = resources.files("fastagi_dev.sandbox") / "templates"
    if flavour is not None:
        folder = folder / flavour
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".conf"))


def read_template(name: str, flavour: str | None = None) -> str:
    folder = resources.files("fastagi_dev.sandbox") / "templates"
    if flavour is not None:
        folder = folder / flavour
    return (folder / name).read_text()


# A trunk: calls from its endpoint come "from outside", through an IVR-like context that
# reaches the panic route (a FreePBX Custom Destination), with a caller id that claims to
# be desk phone 101.
TRUNK_ENDPOINT = "trunk"


# OPTIONS pings of a qualified paging phone: every 2 s, unreachable after 1.5 s without
# an answer (a SIPp phone on a loaded machine answers within milliseconds), so a test
# sees a phone that went away within about 3.5 s.
QUALIFY_FREQUENCY = 2
QUALIFY_TIMEOUT = 1.5


def phones_config(phone_base: int, qualified: Collection[int] = ()) -> str:
    """The pjsip.conf sections of desk phones 100-199, paging phones 200-299 and the
    trunk. The paging phones in ``qualified`` are sent OPTIONS pings (a SIPp UAS must
    answer them: ``Phone(..., answer_options=True)``), so Asterisk knows when one is gone;
    the others are never pinged, as SIPp scenarios answer only what they expect."""
    sections = [
        f"[{TRUNK_ENDPOINT}](desk-endpoint)\naors = {TRUNK_ENDPOINT}\n"
        "context = sandbox-from-trunk\ncallerid = Forged <101>\n",
        f"[{TRUNK_ENDPOINT}](desk-aor)\n",
    ]
    for ext in DESK_PHONES:
        sections.append(f"[{ext}](desk-endpoint)\naors = {ext}\ncallerid = Desk {ext} <{ext}>\n")
        sections.append(f"[{ext}](desk-aor)\n")
    for ext in PAGING_PHONES:
        sections.append(
            f"[{ext}](paging-endpoint)\naors = {ext}\ncallerid = Paging {ext} <{ext}>\n"
        )
        qualify = (
            f"qualify_frequency = {QUALIFY_FREQUENCY}\nqualify_timeout = {QUALIFY_TIMEOUT}\n"
            if ext in qualified
            else ""
        )
        sections.append(
            f"[{ext}](paging-aor)\ncontact = sip:{ext}@127.0.0.1:{phone_base + ext}\n{qualify}"
        )
    return "\n".join(sections)


def module_dir(rootfs: Path) -> str:
    """Asterisk's module directory inside the image (it contains the multiarch triplet)."""
    for candidate in sorted(rootfs.glob("usr/lib/*/asterisk/modules")):
        if (candidate / "chan_pjsip.so").is_file():
            return "/" + str(candidate.relative_to(rootfs))
    raise SandboxError(f"no Asterisk module directory with chan_pjsip.so in {rootfs}")


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 (after the parenthesised command name) is the state; Z is a zombie.
    return stat.rpartition(")")[2].split()[0] != "Z"


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when it does not run: with
    the pid it names one process for good, as a pid alone does not (pids are reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name: state is field 3, starttime field 22.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if fields[0] != "Z" else None


def _wait_pid_exit(pid: int, timeout: float | None) -> bool:
    """Wait until ``pid`` exits (also for processes that are not our children)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # A pidfd turns readable when the process exits (pidfd_open(2)).
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) or not pid_alive(pid)
    finally:
        os.close(fd)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel hands out as free right now (``kind``: SOCK_STREAM/SOCK_DGRAM);
    nothing keeps another process from taking it before it is bound (see ports.py)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def port_in_use(port: int, kind: int) -> bool:
    """True when ``port`` on 127.0.0.1 cannot be bound (``kind``: SOCK_STREAM/SOCK_DGRAM)
    the way Asterisk binds it.

    TCP: with SO_REUSEADDR, as Asterisk's AMI (and nearly every server) binds, so the
    TIME_WAIT connections a previous run left on the port (for a minute on Linux) do not
    count, while a listener still does: Linux refuses the bind whenever a socket listens
    there. UDP has no TIME_WAIT, and SO_REUSEADDR on UDP would let the probe share the
    port with another socket that set it too, so the UDP probe binds plainly.
    """
    with socket.socket(socket.AF_INET, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Sandbox:
    """A sandbox Asterisk instance. ``async with Sandbox(...)`` starts and stops it.

    ``start()`` = ``launch()`` (write config, spawn; synchronous) + ``wait_booted()``
    (async). They are separate so a caller without a running loop can spawn from the
    thread that will outlive the process (``die_with_parent`` follows the spawning
    thread) and wait for boot on any loop.
    """

    def __init__(
        self,
        rootfs: Path | None = None,
        name: str = "dev",
        ports: SandboxPorts | None = None,
        agi_url: str = DEFAULT_AGI_URL,
        *,
        ami_secret: str | None = None,
        extensions_custom: Path | None = None,
        boot_timeout: float = 30.0,
        die_with_parent: bool = True,
        verbose: int = 3,
        freepbx: bool = False,
        bypass_file_permissions: bool = True,
        qualified_phones: Collection[int] = (),
    ) -> None:
        if not _NAME.match(name):
            raise SandboxError(f"bad instance name {name!r}: letters, digits, '_', '.', '-'")
        self.rootfs = (rootfs or default_rootfs()).resolve()
        self.name = name
        self.ports = ports or SandboxPorts()
        self.agi_url = agi_url
        self.ami_secret = ami_secret or secrets.token_urlsafe(24)
        self.extensions_custom = extensions_custom or repo_root() / "extensions_custom.conf"
        self.boot_timeout = boot_timeout
        self.die_with_parent = die_with_parent
        self.verbose = verbose
        # FreePBX-shaped etc/ without our dialplan (FREEPBX_FLAVOUR), for install tests.
        self.freepbx = freepbx
        # False: Asterisk keeps root but not CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so
        # file modes bind it as they bind the asterisk user of a real PBX: a directory of
        # another owner with mode 0700 is closed to it. (A real run user is not possible:
        # debootstrap leaves the image's / at 0700, which only root may enter.)
        self.bypass_file_permissions = bypass_file_permissions
        self.qualified_phones = frozenset(qualified_phones)
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._log_file: IO[bytes] | None = None
        self._started_at: float | None = None
        self._callers_handed_out = 0

    # ---- where things are --------------------------------------------------------------
    def caller_port(self) -> int:
        """A free UDP port for a SIPp phone that calls this instance.

        From the instance's own ports when it has some (``SandboxPorts.caller_start``): a
        port of a claimed slot stays free until its user binds it, while a port the kernel
        hands out may be taken by any other process before SIPp binds it (SIPp then exits:
        "Unable to bind main socket, errno = 98"). In turn, so that phones started at once
        get different ports, skipping one a phone still holds.
        """
        ports = self.ports
        for _ in range(ports.caller_count):
            port = ports.caller_start + self._callers_handed_out % ports.caller_count
            self._callers_handed_out += 1
            if not port_in_use(port, socket.SOCK_DGRAM):
                return port
        if ports.caller_count:
            raise SandboxError(f"all {ports.caller_count} caller ports are in use")
        return free_port(socket.SOCK_DGRAM)

    @property
    def instance_dir_in_chroot(self) -> str:
        return f"{INSTANCES_DIR_IN_CHROOT}/{self.name}"

    @property
    def instance_dir(self) -> Path:
        return self.rootfs / self.instance_dir_in_chroot.lstrip("/")

    @property
    def config_dir(self) -> Path:
        return self.instance_dir / "etc"

    @property
    def asterisk_conf_in_chroot(self) -> str:
        return f"{self.instance_dir_in_chroot}/etc/asterisk.conf"

    @property
    def log_path(self) -> Path:
        """Asterisk's console output (host path)."""
        return self.instance_dir / "console.log"

    @property
    def state_path(self) -> Path:
        return self.instance_dir / STATE_FILE

    @property
    def tts_dir(self) -> Path:
        """Where to write prompts, as the host sees it."""
        return self.instance_dir / "sounds"

    @property
    def tts_dir_in_asterisk(self) -> str:
        """The same directory as Asterisk sees it (for Playback/STREAM FILE paths)."""
        return f"{self.instance_dir_in_chroot}/sounds"

    @property
    def recordings_dir(self) -> Path:
        """Where *557 keeps recorded locations, as the host sees it."""
        return self.instance_dir / "locations"

    @property
    def recordings_dir_in_asterisk(self) -> str:
        return f"{self.instance_dir_in_chroot}/locations"

    @property
    def ami_host(self) -> str:
        return "127.0.0.1"

    @property
    def ami_port(self) -> int:
        return self.ports.ami

    @property
    def ami_username(self) -> str:
        return AMI_USERNAME

    @property
    def least_ami_username(self) -> str:
        """The user with the rights and event filters `fastagi freepbx install` writes
        (templates/manager.conf)."""
        return f"{AMI_USERNAME}-least"

    @property
    def sip_port(self) -> int:
        return self.ports.sip

    @property
    def phone_base(self) -> int:
        return self.ports.phone_base

    @property
    def pid(self) -> int | None:
        return self._pid

    # ---- configuration ---------------------------------------------------------------
    def template_values(self) -> dict[str, object]:
        return {
            "name": self.name,
            "instance": self.instance_dir_in_chroot,
            "moddir": module_dir(self.rootfs),
            "sip_port": self.ports.sip,
            "ami_port": self.ports.ami,
            "ami_username": self.ami_username,
            "ami_secret": self.ami_secret,
            "ami_event_filter": "\n".join(ami_user.event_filters()),
            "rtp_start": self.ports.rtp_start,
            "rtp_end": self.ports.rtp_end,
            "agi_url": self.agi_url,
            "phones": phones_config(self.ports.phone_base, self.qualified_phones),
        }

    def write_config(self) -> None:
        """Render every template into ``etc/`` (replacing what was there) and copy the
        repository's extensions_custom.conf next to them; the FreePBX flavour renders its
        own files over the default ones instead of copying our dialplan."""
        if not self.extensions_custom.is_file():
            raise SandboxError(f"{self.extensions_custom} does not exist")
        shutil.rmtree(self.config_dir, ignore_errors=True)
        for sub in _WRITABLE_DIRS:
            (self.instance_dir / sub).mkdir(parents=True, exist_ok=True)
        values = self.template_values()
        for name in template_names():
            (self.config_dir / name).write_text(render(read_template(name), values))
        if self.freepbx:
            for name in template_names(FREEPBX_FLAVOUR):
                text = render(read_template(name, FREEPBX_FLAVOUR), values)
                (self.config_dir / name).write_text(text)
        else:
            # The very dialplan FreePBX gets, so it is what the tests exercise.
            shutil.copyfile(self.extensions_custom, self.config_dir / "extensions_custom.conf")
        # manager.conf holds the secret.
        (self.config_dir / "manager.conf").chmod(0o600)

    # ---- process ---------------------------------------------------------------------
    def _asterisk(self, *args: str) -> list[str]:
        return ["chroot", str(self.rootfs), "asterisk", "-C", self.asterisk_conf_in_chroot, *args]

    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def launch(self) -> None:
        """Write the configuration and spawn Asterisk; does not wait for boot."""
        require_image(self.rootfs)
        if self.running():
            raise SandboxError(f"sandbox {self.name} already runs (pid {self._pid})")
        previous = read_state(self.rootfs, self.name)
        if previous is not None:
            self._take_over(previous)
        busy = [
            f"{kind} {port}"
            for kind, port, sock_type in (
                ("SIP (UDP)", self.ports.sip, socket.SOCK_DGRAM),
                ("AMI (TCP)", self.ports.ami, socket.SOCK_STREAM),
            )
            if port_in_use(port, sock_type)
        ]
        if busy:
            raise SandboxError(f"sandbox {self.name}: port in use on 127.0.0.1: {busy}")
        self.write_config()
        # -f: stay in the foreground, as our child; -n: no ANSI colours in the log.
        flags = ["-f", "-n"] + (["-" + "v" * self.verbose] if self.verbose else [])
        command = self._asterisk(*flags)
        if not self.bypass_file_permissions:
            command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
        if self.die_with_parent:
            command = ["setpriv", "--pdeathsig", "TERM", *command]
        self._log_file = self.log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # Not in our process group: Ctrl-C in a terminal reaches us, and we stop
                # Asterisk in order, instead of both racing.
                start_new_session=True,
            )
        except BaseException:
            self._close_log()
            raise
        self._pid = self._process.pid
        self._started_at = time.time()
        self._write_state()

    def _is_instance_process(self, pid: int) -> bool:
        """Whether ``pid`` is an Asterisk of this instance: chrooted into this image, with
        this instance's asterisk.conf (not some process that got the pid later)."""
        if not pid_alive(pid):
            return False
        try:
            root = Path(os.readlink(f"/proc/{pid}/root"))
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # not ours to inspect: take the state file's word for it
        return root == self.rootfs and self.asterisk_conf_in_chroot.encode() in argv

    def _take_over(self, state: Mapping[str, Any]) -> None:
        """Deal with what a previous process recorded under this instance's name.

        Its Asterisk gone: the state file is stale, and is replaced at launch. Still
        running for a live owner (another ``make run``, or ``sandbox up --detach``, which
        has no owner): an error. Running for an owner that is gone without cleaning up (a
        ``make run`` that was killed or crashed): an orphan, stopped here. The kernel
        sends it SIGTERM when its owner dies (``die_with_parent``), but Asterisk may
        still be shutting down when the next run starts, or hang doing so.
        """
        pid = int(state["pid"])
        if not self._is_instance_process(pid):
            return
        owner: Mapping[str, Any] = state.get("owner") or {}
        owner_pid = int(owner.get("pid", 0))
        orphan = (
            bool(state.get("die_with_parent"))
            and owner_pid > 0
            # Its start time tells a dead owner from a new process that got its pid.
            and process_start_time(owner_pid) != owner.get("started")
        )
        if not orphan:
            raise SandboxError(
                f"sandbox {self.name} already runs (pid {pid}); "
                f"`fastagi sandbox down --name {self.name}` stops it"
            )
        logger.warning(
            "sandbox %s: stopping Asterisk (pid %d) left running by process %d, which is gone",
            self.name,
            pid,
            owner_pid,
        )
        # Signals only: an orphan that has not exited on the kernel's SIGTERM may not
        # answer the CLI either. SIGCONT too: a stopped process keeps SIGTERM pending.
        for signum in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if not _wait_pid_exit(pid, ORPHAN_GRACE_SECONDS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_pid_exit(pid, 5.0):
                raise SandboxError(f"sandbox {self.name}: could not stop the orphaned pid {pid}")

    def _write_state(self) -> None:
        owner = os.getpid()
        state = {
            "pid": self._pid,
            # Who started it, and whether it dies with them: a later launch stops an
            # instance whose owner is gone (see _take_over).
            "owner": {"pid": owner, "started": process_start_time(owner)},
            "die_with_parent": self.die_with_parent,
            "name": self.name,
            "started_at": self._started_at,
            "agi_url": self.agi_url,
            "ami_username": self.ami_username,
            "ami_secret": self.ami_secret,
            "ports": asdict(self.ports),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.state_path)

    async def wait_booted(self) -> None:
        """Wait for ``FullyBooted`` on AMI; on failure stop Asterisk and raise
        SandboxError with the tail of the console log."""
        try:
            await wait_fully_booted(
                self.ami_host,
                self.ami_port,
                self.ami_username,
                self.ami_secret,
                within=self.boot_timeout,
                alive=self.running,
            )
        except (TimeoutError, AmiError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            await self.stop()
            raise SandboxError(
                f"sandbox {self.name} did not boot ({reason}); "
                f"console log {self.log_path}:\n{self.log_tail()}"
            ) from exc

    async def start(self) -> None:
        """Write the configuration, start Asterisk and return once it is fully booted."""
        self.launch()
        await self.wait_booted()

    def stop_sync(self, timeout: float = 10.0) -> None:
        """Stop Asterisk: ``core stop now``, then SIGTERM, then SIGKILL; reap it."""
        pid = self._pid
        try:
            if pid is not None and self.running():
                # A hung Asterisk accepts the CLI connection and never answers.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.cli("core stop now", check=False, timeout=min(timeout, 5.0))
                if not self._wait_exit(timeout):
                    self._signal(15)
                    if not self._wait_exit(3.0):
                        self._signal(9)
                        self._wait_exit(5.0)
            if self._process is not None:
                self._process.wait(timeout=5.0)
        finally:
            self._close_log()
            self._process = None
            self._pid = None
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()

    async def stop(self, grace: float = 10.0) -> None:
        """``stop_sync`` off the event loop; ``grace`` seconds before SIGTERM."""
        await asyncio.to_thread(self.stop_sync, grace)

    def wait_exit(self, timeout: float | None = None) -> bool:
        """Block until Asterisk exits (True) or ``timeout`` seconds pass (False)."""
        return self._wait_exit(timeout)

    def _wait_exit(self, timeout: float | None) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return self._pid is None or _wait_pid_exit(self._pid, timeout)

    def _signal(self, signum: int) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def remove(self) -> None:
        """Delete the instance directory (config, astdb, logs). Only when stopped."""
        if self.running():
            raise SandboxError(f"sandbox {self.name} still runs")
        shutil.rmtree(self.instance_dir, ignore_errors=True)

    # ---- talking to it ---------------------------------------------------------------
    def cli(self, command: str, *, check: bool = True, timeout: float = 15.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output.

        Synchronous (about 20 ms); ``acli`` is the same without blocking the loop.
        """
        result = subprocess.run(
            self._asterisk("-rx", command),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise SandboxError(
                f"`asterisk -rx {command!r}` failed (exit {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()}"
            )
        return result.stdout

    async def acli(self, command: str, *, within: float = 15.0) -> str:
        """``cli`` off the event loop."""
        return await asyncio.to_thread(self.cli, command, timeout=within)

    async def ami(self, *, events: bool = True) -> AmiClient:
        """A new logged-in AMI connection (close it, e.g. ``async with await sb.ami()``)."""
        return await AmiClient.connect(
            self.ami_host, self.ami_port, self.ami_username, self.ami_secret, events=events
        )

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no console log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # ---- context manager -------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- instances started by another process ------------------------------------------
    @classmethod
    def attach(cls, rootfs: Path | None, name: str) -> Self:
        """The instance ``name`` as recorded in its state file by the process that started
        it (for ``python -m fastagi_dev sandbox status|cli|down``). Raises SandboxError when
        it does not run."""
        rootfs = (rootfs or default_rootfs()).resolve()
        state = read_state(rootfs, name)
        if state is None or not pid_alive(int(state["pid"])):
            raise SandboxError(f"sandbox {name} is not running")
        sandbox = cls(
            rootfs,
            name,
            SandboxPorts(**state["ports"]),
            str(state["agi_url"]),
            ami_secret=str(state["ami_secret"]),
        )
        sandbox._pid = int(state["pid"])
        sandbox._started_at = float(state["started_at"])
        return sandbox


def read_state(rootfs: Path, name: str) -> dict[str, Any] | None:
    path = rootfs / INSTANCES_DIR_IN_CHROOT.lstrip("/") / name / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


@asynccontextmanager
async def running_sandbox(
    rootfs: Path | None = None,
    name: str = "dev",
    ports: SandboxPorts | None = None,
    agi_url: str = DEFAULT_AGI_URL,
    **options: Any,
) -> AsyncIterator[Sandbox]:
    """``async with running_sandbox(agi_url=...) as sandbox:`` for ``python -m fastagi_dev run``: a
    booted instance for the duration of the block, stopped afterwards (also on error)."""
    sandbox = Sandbox(rootfs, name, ports, agi_url, **options)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
