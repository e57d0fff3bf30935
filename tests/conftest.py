"""Shared fixtures live in plugin modules: tests/pg.py (PostgreSQL),
tests/sandbox_fixtures.py (the sandbox Asterisk and SIPp) and tests/notify_fixtures.py
(SMTP and webhook servers)."""

import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.pg", "tests.sandbox_fixtures", "tests.browser", "tests.notify_fixtures"]

# Hypothesis's wall-clock limits (a 200 ms deadline per example, the "too slow" health
# check) measure the machine, not the property: on a loaded machine they failed
# test_freepbx_plan (an example took 595 ms) and the history export's properties. A
# property is checked by its assertions; a slow example is no counter-example. Tests that
# set their own settings() inherit the profile for what they leave unset.
#
# Two profiles (Hypothesis's own dev/CI pattern). "thorough", Hypothesis's 100 examples a
# property, is what make test runs (--hypothesis-profile=thorough). "quick", the default,
# keeps a bare `pytest tests/unit` fast enough to run again and again while working.
settings.register_profile("thorough", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("quick", settings.get_profile("thorough"), max_examples=20)
settings.load_profile("quick")


if os.environ.get("FASTAGI_TEST_LOOP") == "uvloop":
    # Production runs on uvloop, whose transports are not asyncio's classes: make test
    # runs the unit tests a second time on it.
    import uvloop

    def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
        return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _no_scheduled_checks_nor_fixed_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started by a test runs no scheduled checks ([health], on by default):
    their AMI logins, probe calls, lamp and events would be a second test inside each
    test. The tests of the scheduled checks enable them (tests/e2e/test_health.py)."""
    monkeypatch.setenv("FASTAGI_HEALTH__ENABLED", "false")
    # A `fastagi serve` of a test (no console) listens for /metrics on a free port, not
    # on the fixed 9464 that the next server would find taken.
    monkeypatch.setenv("FASTAGI_METRICS__PORT", "0")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    """What a test starts (servers, phones, AMI connections), closed in reverse order at
    its end, whether it passed or not."""
    async with AsyncExitStack() as exits:
        yield exits


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``exclusive`` go last: then they wait for no queue of other tests, and
    no worker boots its sandbox (a few seconds of both cores) while they run."""
    items.sort(key=lambda item: item.get_closest_marker("exclusive") is not None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist a test marked ``exclusive`` (a load test that takes the machine)
    runs while no other test of the session does: it holds a lock other tests share.

    A gate in front of the lock keeps the exclusive test from waiting forever behind a
    stream of shared holders (flock favours no one): it holds the gate while it waits and
    runs; the others pass the gate only on their way in. Outside pytest-timeout's
    wrapper (tryfirst), so waiting here does not count against a test's timeout.
    """
    basetemp = item.config.getoption("basetemp")
    if "PYTEST_XDIST_WORKER" not in os.environ or not basetemp:
        return (yield)
    # The run's directory, above each worker's own (.../pytest-N/popen-gwK).
    shared = Path(basetemp).parent
    exclusive = item.get_closest_marker("exclusive") is not None
    with (
        (shared / "exclusive.gate").open("a") as gate,
        (shared / "exclusive.lock").open("a") as lock,
    ):
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
        return (yield)
