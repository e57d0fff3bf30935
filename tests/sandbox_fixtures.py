"""pytest plugin: the sandbox Asterisk for end-to-end tests.

Listed in tests/conftest.py ``pytest_plugins``. Fixtures:

``sandbox_rootfs`` (session) -> Path
    The image. Missing or incomplete: the test fails telling you to run
    ``make sandbox-image`` (``make test`` and ``make e2e`` build it first).
``port_claim`` (session) -> fastagi_dev.sandbox.PortClaim
    This session's (xdist worker's) slot of ports, held against every other session.
``agi_port`` (session) -> int
    A TCP port on 127.0.0.1 of the session's slot for the FastAGI server under test. The
    sandbox's ``FASTAGI_PANIC_URL`` is ``agi://127.0.0.1:<agi_port>``: start your
    server there.
``sandbox`` (session) -> fastagi_dev.sandbox.Sandbox
    One booted instance for the whole session, named after the pytest pid, on the
    session's slot (``sandbox.sip_port``, ``sandbox.ami_port``, ``sandbox.phone_base``
    ...). It is stopped and its directory deleted at the end.
``sandbox_factory`` (function) -> ``start(agi_url=None, **options) -> Sandbox``
    Extra instances, each on a slot of its own, stopped and deleted after the test;
    ``options`` go to ``Sandbox`` (``freepbx=True``: a FreePBX-shaped etc/ without our
    dialplan).

The fixtures are synchronous on purpose: a sync session fixture works with async tests
on any loop scope (pytest-asyncio's default per-function loop included), so tests need
no ``loop_scope`` marks. Use ``await sandbox.ami()`` for an AMI connection on the test's
own loop, ``sandbox.cli("...")`` (or ``await sandbox.acli("...")``) for CLI commands,
and tests/sipp.py for SIP phones.

When a test that used ``sandbox`` fails, the tail of Asterisk's console log is added to
its report as the section "sandbox console log".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastagi_dev.sandbox.image import INSTANCES_DIR_IN_CHROOT, default_rootfs, is_complete
from fastagi_dev.sandbox.instance import Sandbox, pid_alive, read_state
from fastagi_dev.sandbox.ports import PortClaim, claim_sandbox_ports

LOG_TAIL_LINES = 60
STALE_AFTER_SECONDS = 600


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on a private loop in a helper thread, so it works
    whether or not the calling thread already runs a loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(factory())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="sandbox-boot")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def start_sandbox(
    rootfs: Path, name: str, agi_url: str, claim: PortClaim, **options: Any
) -> Sandbox:
    """A booted instance on the ports of ``claim`` (which keeps them from other instances,
    pytest-xdist workers among them): close the claim after ``stop_sandbox``.

    ``launch()`` runs in the calling (main) thread on purpose: the kernel's parent-death
    signal follows the thread that spawned Asterisk, and the main thread lives as long as
    pytest does.
    """
    sandbox = Sandbox(rootfs, name, claim.ports, agi_url, **options)
    sandbox.remove()  # leftovers of an earlier run with the same pid
    sandbox.launch()
    try:
        _run_coroutine(sandbox.wait_booted)
    except BaseException:
        sandbox.stop_sync()
        raise
    return sandbox


def sweep_stale_instances(rootfs: Path) -> None:
    """Delete ``pytest-*`` instance directories left by sessions that were killed: no live
    process in their state file, and untouched for 10 minutes (a younger directory may
    belong to a session that is booting right now)."""
    instances = rootfs / INSTANCES_DIR_IN_CHROOT.lstrip("/")
    for directory in instances.glob("pytest-*"):
        state = read_state(rootfs, directory.name)
        if state is not None and pid_alive(int(state["pid"])):
            continue
        if time.time() - directory.stat().st_mtime > STALE_AFTER_SECONDS:
            shutil.rmtree(directory, ignore_errors=True)


def stop_sandbox(sandbox: Sandbox) -> None:
    sandbox.stop_sync()
    sandbox.remove()


@pytest.fixture(scope="session")
def sandbox_rootfs() -> Path:
    rootfs = default_rootfs()
    if not is_complete(rootfs):
        pytest.fail(
            f"no complete sandbox image at {rootfs}: run `make sandbox-image` "
            "(make test and make e2e build it first)",
            pytrace=False,
        )
    sweep_stale_instances(rootfs)
    return rootfs


@contextlib.contextmanager
def sandbox_of_its_own(
    rootfs: Path, label: str, **options: Any
) -> Iterator[tuple[Sandbox, PortClaim]]:
    """A booted instance on a slot of its own, for tests that need what the session's
    instance must not have (``options``: file modes that bind Asterisk, qualified
    phones); its dialplan reaches a FastAGI server on the slot's first spare TCP port
    (``claim.tcp_port(0)``), the others are free for the test's own servers."""
    with claim_sandbox_ports() as claim:
        agi_port = claim.tcp_port(0)
        instance = start_sandbox(
            rootfs, f"pytest-{os.getpid()}-{label}", f"agi://127.0.0.1:{agi_port}", claim, **options
        )
        try:
            yield instance, claim
        finally:
            stop_sandbox(instance)


@pytest.fixture(scope="session")
def port_claim() -> Iterator[PortClaim]:
    with claim_sandbox_ports() as claim:
        yield claim


@pytest.fixture(scope="session")
def agi_port(port_claim: PortClaim) -> int:
    return port_claim.tcp_port(0)


@pytest.fixture(scope="session")
def sandbox(sandbox_rootfs: Path, port_claim: PortClaim, agi_port: int) -> Iterator[Sandbox]:
    # The pid keeps the instances of concurrent sessions and xdist workers apart.
    instance = start_sandbox(
        sandbox_rootfs, f"pytest-{os.getpid()}", f"agi://127.0.0.1:{agi_port}", port_claim
    )
    try:
        yield instance
    finally:
        stop_sandbox(instance)


@pytest.fixture
def sandbox_factory(sandbox_rootfs: Path, agi_port: int) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []
    with contextlib.ExitStack() as claims:

        def start(agi_url: str | None = None, **options: Any) -> Sandbox:
            claim = claims.enter_context(claim_sandbox_ports())
            name = f"pytest-{os.getpid()}-{len(started) + 1}"
            instance = start_sandbox(
                sandbox_rootfs, name, agi_url or f"agi://127.0.0.1:{agi_port}", claim, **options
            )
            started.append(instance)
            return instance

        try:
            yield start
        finally:
            for instance in started:
                stop_sandbox(instance)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        instance = funcargs.get("sandbox")
        if isinstance(instance, Sandbox):
            report.sections.append(
                (
                    f"sandbox console log ({instance.log_path}, last {LOG_TAIL_LINES} lines)",
                    instance.log_tail(LOG_TAIL_LINES),
                )
            )
    return report
