"""sd_notify against a real unix datagram socket, as systemd listens on one."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastagi.sdnotify import SystemdNotifier, watchdog_fed, watchdog_interval

pytestmark = pytest.mark.timeout(20)


class Listener:
    """What systemd does with NOTIFY_SOCKET: a bound datagram socket; a thread records
    each datagram with its arrival time, so a blocked event loop cannot delay the
    recording."""

    def __init__(self, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.settimeout(0.1)
        self.received: list[tuple[float, bytes]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            with self._changed:
                self.received.append((time.monotonic(), data))
                self._changed.notify_all()

    def wait_for(self, count: int, within: float = 5.0) -> list[bytes]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.received) >= count, within), (
                f"{len(self.received)} datagrams, expected {count}"
            )
            return [data for _, data in self.received]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify"
    got = Listener(str(path))
    try:
        yield got
    finally:
        got.close()


def test_ready_and_status_arrive_as_one_datagram(listener: Listener, tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.notify("READY=1", "STATUS=listening on port 4573")
    assert listener.wait_for(1) == [b"READY=1\nSTATUS=listening on port 4573"]
    notifier.close()


def test_abstract_socket_name() -> None:
    name = f"fastagi-sdnotify-test-{os.getpid()}"
    got = Listener(b"\0" + name.encode())
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("STOPPING=1")
        assert got.wait_for(1) == [b"STOPPING=1"]
        notifier.close()
    finally:
        got.close()


def test_without_systemd_nothing_is_sent_and_nothing_raises(tmp_path: Path) -> None:
    assert not SystemdNotifier.from_environment({}).notify("READY=1")
    # vsock: is systemd's, not ours: refused without an exception.
    assert not SystemdNotifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1"}).notify("READY=1")
    # A socket path nobody listens on (systemd gone): a warning, not an error.
    gone = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert not gone.notify("READY=1")
    gone.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    pid = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}, pid) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(pid)}, pid) == 5.0
    # Meant for another process (a child that inherited the environment).
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_interval({}, pid) is None


async def test_watchdog_is_fed_from_the_loop_and_starves_when_it_blocks(
    listener: Listener, tmp_path: Path
) -> None:
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"}
    )
    assert notifier.watchdog == 0.1
    blocked = 0.6
    async with watchdog_fed(notifier):
        await asyncio.to_thread(listener.wait_for, 6)
        before = len(listener.received)
        block_started = time.monotonic()
        time.sleep(blocked)  # noqa: ASYNC251 (the loop is blocked on purpose: nothing feeds the watchdog)
        block_ended = time.monotonic()
        await asyncio.to_thread(listener.wait_for, before + 2)
    notifier.close()
    times = [at for at, data in listener.received if data == b"WATCHDOG=1"]
    assert len(times) == len(listener.received)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    during_block = [at for at in times if block_started + 0.01 < at < block_ended - 0.01]
    assert during_block == []
    # Half of WatchdogSec (0.1 s) while the loop runs: the median, so that one stall of a
    # loaded machine (make test runs this beside Asterisk) is not taken for the feeder's
    # period; the whole block while it does not run.
    assert statistics.median(gaps[: before - 1]) < 0.15, gaps
    assert max(gaps) >= blocked - 0.05, gaps
    # Leaving the block stops the feeding.
    count = len(listener.received)
    with pytest.raises(AssertionError):
        listener.wait_for(count + 1, within=0.3)
