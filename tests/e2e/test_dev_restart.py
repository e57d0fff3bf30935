"""``make run`` (``python -m fastagi_dev run``) starts again at once after Ctrl-C and after a crash.

``python -m fastagi_dev run`` runs as a real process, on ports, a sandbox instance and a state
directory of its own (``FASTAGI_DEV_*``), so it never touches a ``make run`` beside it.
Before each restart the previous run leaves what a real one leaves:
- TCP connections in TIME_WAIT on the AMI and AGI ports (a manager session that logs off
  and an AGI call the server ends: the side that closes first keeps TIME_WAIT, here the
  listening side). Asserted present, or a restart would prove nothing. Linux keeps them
  for a minute; a bind probe without SO_REUSEADDR took them for a listener.
- after a crash (SIGKILL: no clean-up runs), its PostgreSQL, which lives in a session of
  its own, and its Asterisk, which the kernel sends SIGTERM; and, for the case where that
  Asterisk hangs instead of exiting, a stopped one, with a killed postmaster's stale
  ``postmaster.pid`` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from fastagi_dev.sandbox.image import INSTANCES_DIR_IN_CHROOT, repo_root
from fastagi_dev.sandbox.instance import pid_alive, port_in_use, read_state
from fastagi_dev.sandbox.ports import PortClaim, claim_sandbox_ports
from tests.pg import postgres_tmpdir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = repo_root()
READY_LINE = "fastagi-panic is running"
# The first start runs initdb and renders the prompts; later ones take about 2 s.
START_WITHIN = 90.0
STOP_WITHIN = 30.0
TCP_TIME_WAIT = "06"  # the state column of /proc/net/tcp


def time_wait_ports() -> set[int]:
    """Local ports on 127.0.0.1 with a connection in TIME_WAIT."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, port = local.split(":")
        if address == "0100007F" and state == TCP_TIME_WAIT:
            ports.add(int(port, 16))
    return ports


async def wait_until(condition: str, check: Callable[[], bool], within: float) -> None:
    """Poll ``check()`` until it holds."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 (no event tells of a socket's state)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {condition}") from None


async def wait_pid_gone(pid: int, within: float = 10.0) -> None:
    """Wait until ``pid`` (not our child) exits: its pidfd turns readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        async with asyncio.timeout(within):
            await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class DevRun:
    """One ``python -m fastagi_dev run`` in a process group of its own, as a terminal runs
    ``make run`` in its foreground group; its output is collected as it comes."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.lines: list[str] = []
        self._ready = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def start(self, within: float = START_WITHIN) -> None:
        """Spawn; return once it printed its banner, i.e. everything is up."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fastagi_dev",
            "run",
            env=self.env,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._read_output(self._process))
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self._process.wait())
        try:
            await asyncio.wait({ready, exited}, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
            exited.cancel()
        if not self._ready.is_set():
            if self._process.returncode is not None:
                await self._pump  # the rest of what it said before it exited
            state = (
                f"exited with status {self._process.returncode}"
                if self._process.returncode is not None
                else f"is not ready after {within} s"
            )
            raise AssertionError(f"fastagi_dev run {state}:\n{self.output[-6000:]}")

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with self.log_path.open("a") as log:
            while line := (await process.stdout.readline()).decode(errors="replace"):
                self.lines.append(line)
                log.write(line)
                if READY_LINE in line:
                    self._ready.set()

    async def signal_group(self, signum: int, within: float = STOP_WITHIN) -> int:
        """Send ``signum`` to its process group (Ctrl-C in a terminal reaches the whole
        foreground group); return its exit status."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)
        return await self.wait(within)

    async def wait(self, within: float = STOP_WITHIN) -> int:
        assert self._process is not None
        assert self._pump is not None
        async with asyncio.timeout(within):
            status = await self._process.wait()
            await self._pump
        return status

    def kill_if_running(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)


class DevEnvironment:
    """The ports, instance and state directory a `make run` of this test takes."""

    def __init__(self, rootfs: Path, cache: Path, claim: PortClaim, log_path: Path) -> None:
        self.rootfs = rootfs
        self.cache = cache
        self.ports = claim.ports
        self.instance = f"pytest-dev-restart-{os.getpid()}"
        self.agi_port = claim.tcp_port(0)
        self.pg_port = claim.tcp_port(1)
        self.web_port = claim.tcp_port(2)
        self.log_path = log_path
        self.runs: list[DevRun] = []

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("FASTAGI_") and key != "PYTHONASYNCIODEBUG"
        }
        env.update(
            {
                "FASTAGI_SANDBOX_ROOTFS": str(self.rootfs),
                "FASTAGI_DEV_DIR": str(self.cache),
                "FASTAGI_DEV_PG_PORT": str(self.pg_port),
                "FASTAGI_DEV_INSTANCE": self.instance,
                "FASTAGI_DEV_SIP_PORT": str(self.ports.sip),
                "FASTAGI_DEV_AMI_PORT": str(self.ports.ami),
                "FASTAGI_DEV_RTP_START": str(self.ports.rtp_start),
                "FASTAGI_DEV_RTP_END": str(self.ports.rtp_end),
                "FASTAGI_DEV_PHONE_BASE": str(self.ports.phone_base),
                "FASTAGI_AGI__PORT": str(self.agi_port),
                "FASTAGI_AGI__SHUTDOWN_GRACE": "1",
                "FASTAGI_WEB__PORT": str(self.web_port),
                "FASTAGI_LOG_LEVEL": "INFO",
            }
        )
        return env

    @property
    def pg_data(self) -> Path:
        return self.cache / "pg" / "data"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pg_data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def asterisk_pid(self) -> int | None:
        state = read_state(self.rootfs, self.instance)
        return None if state is None else int(state["pid"])

    async def start(self) -> DevRun:
        run = DevRun(self.env(), self.log_path)
        self.runs.append(run)
        await run.start()
        banner = run.output
        # The same ports as before: nothing moved aside to dodge a busy port.
        assert f"AMI 127.0.0.1:{self.ports.ami}" in banner, banner
        assert f"agi://127.0.0.1:{self.agi_port}" in banner, banner
        assert f"127.0.0.1:{self.pg_port}/fastagi" in banner, banner
        assert f"http://127.0.0.1:{self.web_port}  (log in as admin / " in banner, banner
        return run

    async def use(self) -> None:
        """A manager session and an AGI call through the running system, each closed by
        the listening side, so both ports are left with a connection in TIME_WAIT."""
        state = read_state(self.rootfs, self.instance)
        assert state is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports.ami)
        writer.write(
            f"Action: Login\r\nUsername: {state['ami_username']}\r\n"
            f"Secret: {state['ami_secret']}\r\n\r\nAction: Logoff\r\n\r\n".encode()
        )
        # Asterisk answers the Logoff with Goodbye and closes the session itself.
        async with asyncio.timeout(10):
            manager = (await reader.read()).decode(errors="replace")
        writer.close()
        assert "Authentication accepted" in manager, manager
        assert "Response: Goodbye" in manager, manager

        reader, writer = await asyncio.open_connection("127.0.0.1", self.agi_port)
        writer.write(
            b"agi_network: yes\nagi_network_script: restart-test\n"
            b"agi_request: agi://127.0.0.1/restart-test\nagi_channel: PJSIP/101-00000001\n\n"
        )
        commands = []
        # An unknown route: the server logs a VERBOSE, sets FASTAGI_STATUS and hangs up.
        async with asyncio.timeout(10):
            while line := await reader.readline():
                commands.append(line)
                writer.write(b"200 result=1\n")
        writer.close()
        assert any(c.startswith(b"SET VARIABLE FASTAGI_STATUS") for c in commands), commands

        # The console answers and closes (Connection: close): its port in TIME_WAIT too.
        reader, writer = await asyncio.open_connection("127.0.0.1", self.web_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            answer = (await reader.read()).decode(errors="replace")
        writer.close()
        assert answer.startswith("HTTP/1.1 200"), answer

        await wait_until(
            "TIME_WAIT on the AMI, AGI and console ports",
            lambda: {self.ports.ami, self.agi_port, self.web_port} <= time_wait_ports(),
            within=10,
        )

    def clean_up(self) -> None:
        """Whatever a failed test left running: the runs, Asterisk, PostgreSQL."""
        for run in self.runs:
            run.kill_if_running()
        pids = [self.asterisk_pid(), self.postmaster_pid()]
        for pid in pids:
            if pid is not None and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(
            self.rootfs / INSTANCES_DIR_IN_CHROOT.lstrip("/") / self.instance, ignore_errors=True
        )


@pytest.fixture
async def dev(sandbox_rootfs: Path, tmp_path: Path) -> AsyncIterator[DevEnvironment]:
    # As root the cluster runs as the postgres OS user, which cannot enter tmp_path.
    with postgres_tmpdir("fastagi-dev-") as cache, claim_sandbox_ports() as claim:
        environment = DevEnvironment(sandbox_rootfs, cache, claim, tmp_path / "dev.log")
        try:
            yield environment
        finally:
            environment.clean_up()


async def test_restarts_at_once_after_ctrl_c_and_after_a_crash(dev: DevEnvironment) -> None:
    first = await dev.start()
    assert (dev.cache / "dev.json").is_file()
    await dev.use()

    # (a) Ctrl-C, then make run again at once: the same ports, TIME_WAIT and all.
    assert await first.signal_group(signal.SIGINT) == 0, first.output[-4000:]
    left = time_wait_ports()
    assert {dev.ports.ami, dev.agi_port} <= left, "the test needs TIME_WAIT on both ports"
    assert dev.postmaster_pid() is None, "Ctrl-C stops PostgreSQL"
    assert read_state(dev.rootfs, dev.instance) is None, "Ctrl-C stops Asterisk"
    second = await dev.start()
    await dev.use()

    # (b) A crash: SIGKILL to its process group. What lives in sessions of its own is
    # left: PostgreSQL still runs, Asterisk got SIGTERM from the kernel.
    postmaster = dev.postmaster_pid()
    assert postmaster is not None
    assert await second.signal_group(signal.SIGKILL) == -signal.SIGKILL
    assert pid_alive(postmaster), "a crash leaves PostgreSQL running"
    assert read_state(dev.rootfs, dev.instance) is not None, "and Asterisk's state file"
    third = await dev.start()
    assert dev.postmaster_pid() == postmaster, "the running PostgreSQL is adopted"
    await dev.use()

    # (c) A crash whose Asterisk does not exit on the kernel's SIGTERM (stopped here to
    # stand for a hung shutdown), and whose postmaster was killed as well: a live orphan
    # Asterisk and a stale postmaster.pid.
    orphan = dev.asterisk_pid()
    postmaster = dev.postmaster_pid()
    assert orphan is not None
    assert postmaster is not None
    os.kill(orphan, signal.SIGSTOP)
    assert await third.signal_group(signal.SIGKILL) == -signal.SIGKILL
    os.kill(postmaster, signal.SIGKILL)
    await wait_pid_gone(postmaster)
    assert (dev.pg_data / "postmaster.pid").is_file()
    assert pid_alive(orphan)
    fourth = await dev.start()
    assert not pid_alive(orphan), "the orphaned Asterisk is stopped"
    assert dev.asterisk_pid() not in (None, orphan)
    assert "left running by process" in fourth.output
    await dev.use()

    assert await fourth.signal_group(signal.SIGINT) == 0, fourth.output[-4000:]
    assert dev.postmaster_pid() is None
    assert read_state(dev.rootfs, dev.instance) is None


async def test_the_port_probe_ignores_time_wait_but_not_a_listener() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        listening = port_in_use(port, socket.SOCK_STREAM)
        accepted.close()  # the listening side closes first: TIME_WAIT on `port`
        client.close()
    await wait_until("TIME_WAIT on the port", lambda: port in time_wait_ports(), within=5)

    assert listening
    assert not port_in_use(port, socket.SOCK_STREAM)


def test_the_udp_probe_sees_a_socket_bound_with_reuseaddr() -> None:
    # Were the probe to set SO_REUSEADDR on UDP too, Linux would let it share this port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        assert port_in_use(taken.getsockname()[1], socket.SOCK_DGRAM)
