"""``fastagi serve`` as a real process, configured the production way (``FASTAGI_*``
environment variables), for fault tests that kill it; and what those tests share: seeding
a department, waiting for cycles, and measuring the gaps between pages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from fastagi.domain.alarm import Alarm
from fastagi.store import Stores
from fastagi.store.history import StoredEvent
from fastagi_dev.sandbox.instance import Sandbox
from tests.history import page_starts, sent_cycles

READY_LINE = "FastAGI server listening"


def server_env(
    sandbox: Sandbox,
    agi_port: int,
    dsn: str,
    *,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a ``fastagi serve`` against ``sandbox``: short test timings,
    and a list setting, which travels as JSON (pydantic-settings' rule for lists)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FASTAGI_") and key != "PYTHONASYNCIODEBUG"
    }
    env.update(
        {
            "FASTAGI_AGI__PORT": str(agi_port),
            "FASTAGI_AGI__SHUTDOWN_GRACE": "1",
            "FASTAGI_DATABASE__DSN": dsn,
            "FASTAGI_AMI__HOST": sandbox.ami_host,
            "FASTAGI_AMI__PORT": str(sandbox.ami_port),
            "FASTAGI_AMI__USERNAME": sandbox.ami_username,
            "FASTAGI_AMI__SECRET": sandbox.ami_secret,
            "FASTAGI_TTS__DIRECTORY": str(sandbox.tts_dir),
            "FASTAGI_TTS__ASTERISK_DIRECTORY": sandbox.tts_dir_in_asterisk,
            "FASTAGI_ALARM__LEAD_IN": "0.3",
            # Short, so a page (about 2 s) ends well before the next is due.
            "FASTAGI_ALARM__ANNOUNCEMENT": "Panic {extension}.",
            "FASTAGI_ALARM__PAGE_TIMEOUT": "5",
            "FASTAGI_ALARM__TAKEOVER_INTERVAL": "1",
            "FASTAGI_ALARM__UNKNOWN_DEPARTMENT_DEVICES": json.dumps(["PJSIP/269"]),
            "FASTAGI_LOG_LEVEL": "INFO",
            # Not what these servers are tested for (tests/e2e/test_health.py is): no
            # scheduled checks, and /metrics on a free port, not the fixed 9464.
            "FASTAGI_HEALTH__ENABLED": "false",
            "FASTAGI_METRICS__PORT": "0",
        }
    )
    env.update(extra or {})
    return env


class ServerProcess:
    """One ``python -m fastagi serve``; its output goes to ``log_path``."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.env = dict(env)
        # Each server its own journal, as in production (one per host).
        self.env.setdefault("FASTAGI_JOURNAL__DIRECTORY", str(log_path.parent / f"journal-{name}"))
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None  # loop time of the spawn
        self.ready_after: float | None = None  # seconds from spawn to listening

    @property
    def port(self) -> int:
        return int(self.env["FASTAGI_AGI__PORT"])

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} was not started"
        return self._process.pid

    @property
    def instance_id(self) -> str:
        """What the server records as ``instance`` in history events."""
        return f"{socket.gethostname()}:{self.pid}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self, *, within: float = 30.0) -> None:
        """Spawn the server; return once it listens (its own log line says so)."""
        assert not self.running, f"{self.name} already runs"
        offset = len(self.log())
        loop = asyncio.get_running_loop()
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fastagi",
                "serve",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.started_at = loop.time()
        process = self._process
        async with asyncio.timeout(within):
            # The log file is the only signal a child process gives of being ready.
            while READY_LINE not in self.log()[offset:]:
                if process.returncode is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log()[-4000:]}")
                await asyncio.sleep(0.02)
        self.ready_after = loop.time() - self.started_at

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the server."""
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGKILL)
        await self._process.wait()

    async def stop(self) -> None:
        """SIGTERM (the graceful way), SIGKILL when it takes too long."""
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await self._process.wait()
        except TimeoutError:
            await self.kill()


async def seed_department(
    store: Stores, name: str, extension: str, devices: Iterable[str], interval: int
) -> None:
    await store.directory.add_paging_group(f"group {name}")
    for device in devices:
        await store.directory.add_paging_device(f"group {name}", device)
    await store.directory.add_department(
        name, interval_seconds=interval, paging_group=f"group {name}"
    )
    await store.directory.map_extensions(name, extension)


async def wait_alarm(
    store: Stores, extension: str, *, cycles: int = 0, within: float = 20.0
) -> Alarm:
    """The active alarm of ``extension`` once it has recorded ``cycles`` page cycles: their
    ``page_cycle`` events are written, i.e. those pages have ended (``alarm.cycles`` counts
    a page when it starts)."""
    async with asyncio.timeout(within):
        while True:
            for alarm in await store.alarms.active_alarms():
                if (
                    alarm.extension == extension
                    and alarm.cycles >= cycles
                    and len(await events(store, alarm.id, "page_cycle")) >= cycles
                ):
                    return alarm
            await asyncio.sleep(0.05)


async def wait_counted(store: Stores, alarm_id: int, cycles: int, within: float) -> Alarm:
    """The alarm once its row counts ``cycles`` cycles: the leader counts a cycle (and
    commits it) when the page's Originate has been sent, before the page ends."""
    async with asyncio.timeout(within):
        while True:
            alarm = await store.alarms.get_alarm(alarm_id)
            if alarm is not None and alarm.cycles >= cycles:
                return alarm
            await asyncio.sleep(0.02)


async def events(store: Stores, alarm_id: int, kind: str) -> list[StoredEvent]:
    return [e for e in await store.history.timeline(alarm_id) if e.kind == kind]


async def recorded_page_starts(
    store: Stores,
    alarm_id: int,
    count: int,
    *,
    heard: bool = False,
    sent: bool = False,
    within: float = 15.0,
) -> list[dt.datetime]:
    """``page_starts`` once ``count`` pages are recorded (a page's event is written when
    it ends, a moment after its INVITE reached the phone). ``heard``: only the pages a
    device answered, not the cycles missed while Asterisk was away. ``sent``: all but
    the pages never sent for want of an AMI connection (``unsent``), which the loop
    follows at once, by design."""
    async with asyncio.timeout(within):
        while True:
            cycles = await events(store, alarm_id, "page_cycle")
            if heard:
                cycles = [cycle for cycle in cycles if cycle.details["answered"]]
            if sent:
                cycles = sent_cycles(cycles)
            if len(cycles) >= count:
                return page_starts(cycles)
            await asyncio.sleep(0.05)


def gaps(times: Iterable[dt.datetime]) -> list[float]:
    return [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)]
