"""PostgreSQL stopped and restarted under a running alarm, for what the servers learn
from it: the interval an administrator set holds through the outage, and the servers
listen again (``NOTIFY``) once it is back, so a deactivation from the CLI still stops the
page at once. A cluster of the test's own (tests/e2e/test_pg_outage.py ``own_pg``), the
sandbox Asterisk, SIPp paging phones.

Extensions: desk phones 105-106, paging phones 245-246 (apart from other tests).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import pytest

from fastagi.admin.alarms import deactivate_alarm
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.e2e.server_process import recorded_page_starts
from tests.e2e.test_pg_outage import (  # noqa: F401 (fixtures)
    SETTINGS,
    OwnPg,
    drained,
    own_pg,
    server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

TOLERANCE = 0.10


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


async def department(store: Stores, name: str, extension: str, phone: int, interval: int) -> None:
    await store.directory.add_paging_group(f"group {name}")
    await store.directory.add_paging_device(f"group {name}", f"PJSIP/{phone}")
    await store.directory.add_department(
        name, interval_seconds=interval, paging_group=f"group {name}"
    )
    await store.directory.map_extensions(name, extension)


async def test_a_running_alarm_keeps_the_interval_it_last_had_while_pg_is_down(
    own_pg: OwnPg,  # noqa: F811 (the fixture of tests/e2e/test_pg_outage.py)
    sandbox: Sandbox,
    stack: AsyncExitStack,
    tmp_path: Path,
) -> None:
    # The directory is cached with the department's old interval and not reloaded for
    # an hour: what the loop pages at while PostgreSQL is down can only come from what
    # PostgreSQL told it last.
    settings = SETTINGS.model_copy(
        update={"directory_refresh": 3600.0, "announcement": "Panic {extension}."}
    )
    s = await server(stack, sandbox, own_pg.dsn, tmp_path / "journal", settings=settings)
    await department(s.store, "Ward I", "105", 245, interval=10)
    await s.service.refresh_directory()
    phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 245, tmp_path))
    alarm = (await s.service.activate("105", await s.service.lookup("105"), uniqueid="i")).alarm
    await phone.wait_invites(1)
    # Changed in PostgreSQL only (no NOTIFY): the cached directory still says 10 s.
    await s.store.directory.set_department_interval("Ward I", 5)
    await phone.wait_invites(3, within=20)
    # Gaps between the page starts the server recorded (the INVITEs add Asterisk's
    # dialling time, which a loaded machine stretches by more than this tolerance).
    before = gaps(await recorded_page_starts(s.store, alarm.id, 3))
    assert abs(before[-1] - 5) <= 5 * TOLERANCE, before  # the loop read 5

    await own_pg.stop()
    down_at = len(phone.invite_times)
    await phone.wait_invites(down_at + 3, within=3 * 10 + 8)  # 10: the bug

    await own_pg.start()
    await drained(s)  # the outage's page cycles, journalled, are rows now
    starts = await recorded_page_starts(s.store, alarm.id, down_at + 3)
    outage_gaps = gaps(starts[down_at - 1 : down_at + 3])
    print(f"gaps while PostgreSQL is down (interval 5 s, cached 10 s): {outage_gaps}")
    assert all(abs(g - 5) <= 5 * TOLERANCE for g in outage_gaps), outage_gaps
    assert await s.service.deactivate(alarm.id, by="cli", reason="done")


async def test_listen_is_rearmed_after_a_restart_and_a_cli_deactivation_stops_the_page(
    own_pg: OwnPg,  # noqa: F811 (the fixture of tests/e2e/test_pg_outage.py)
    sandbox: Sandbox,
    stack: AsyncExitStack,
    tmp_path: Path,
) -> None:
    # The takeover scan (the safety net) only every 30 s: within a second, only the
    # NOTIFY can stop the page.
    settings = SETTINGS.model_copy(
        update={"takeover_interval": 30.0, "lead_in": 5.0, "announcement": "Panic."}
    )
    s = await server(stack, sandbox, own_pg.dsn, tmp_path / "journal", settings=settings)
    await department(s.store, "Ward J", "106", 246, interval=5)
    await s.service.refresh_directory()
    phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 246, tmp_path))
    alarm = (await s.service.activate("106", await s.service.lookup("106"), uniqueid="j")).alarm
    await phone.wait_invites(1)
    assert s.service.listening.is_set()

    delays = []
    for _ in range(2):
        await own_pg.stop()
        async with asyncio.timeout(10):
            while s.service.listening.is_set():  # noqa: ASYNC110 (cleared on the loss)
                await asyncio.sleep(0.01)
        seen = len(phone.invite_times)
        await phone.wait_invites(seen + 1, within=10)  # paging goes on meanwhile
        await own_pg.start()
        back = time.monotonic()
        async with asyncio.timeout(10):
            await s.service.listening.wait()
        delays.append(time.monotonic() - back)
    print(f"PostgreSQL accepting connections to LISTEN again: {[round(d, 3) for d in delays]}")

    # A page plays (back to back, 6 s each at a 5 s interval): the CLI deactivates.
    seen = len(phone.invite_times)
    await phone.wait_invites(seen + 1, within=10)
    await asyncio.sleep(1.0)
    await deactivate_alarm(s.store, alarm.id, reason="after the restart", by="cli:test")
    row = await s.store.alarms.get_alarm(alarm.id)
    assert row is not None
    assert row.deactivated_at is not None
    stopped = row.deactivated_at.timestamp()
    byes = await phone.wait("BYE ", len(phone.invite_times), within=5)
    hung_up = byes[-1].timestamp() - stopped
    print(f"CLI deactivation after the restart to the page hung up: {hung_up * 1000:.0f} ms")
    assert hung_up < 1.0
    assert [t for t in phone.invite_times if t.timestamp() > stopped] == []
