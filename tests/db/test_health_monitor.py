"""The scheduled checks' consequences (fastagi/assurance/watch.py) against a real
PostgreSQL: two servers seeing one fault tell it once; a server that cannot reach
PostgreSQL tells it itself (said twice rather than not at all) and, once PostgreSQL
answers, tells the correction when the site's state says otherwise.

The check is a scripted one ("door": its finding is what the test sets), the AMI client
never connects (no lamp), and the notices are kept: what is under test is what follows
from a run, with the site's state in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi.ami import AmiClient
from fastagi.assurance import Check, Finding
from fastagi.assurance.watch import HealthMonitor
from fastagi.config import DatabaseSettings, Settings
from fastagi.config.health import HealthSettings
from fastagi.domain.health import Health
from fastagi.notify.message import Notice
from fastagi.store.pool import create_pool
from tests.notify_servers import History
from tests.pg import PgServer


class Door:
    """A check whose finding the test sets."""

    def __init__(self) -> None:
        self.finding = Finding.ok("closed")

    async def check(self, _context: object) -> Finding:
        return self.finding


class Notices:
    def __init__(self) -> None:
        self.sent: list[Notice] = []

    def submit_notice(self, notice: Notice) -> int:
        self.sent.append(notice)
        return 1

    @property
    def kinds(self) -> list[str]:
        return [notice.kind for notice in self.sent]


def settings(dsn: str) -> Settings:
    return Settings(
        database=DatabaseSettings(dsn=SecretStr(dsn)),
        health=HealthSettings(checks=["door"], slow_checks=[], raise_after=2, clear_after=2),
    )


@pytest.fixture
async def pools(database_dsn: str) -> AsyncIterator[list[asyncpg.Pool[asyncpg.Record]]]:
    made = [await create_pool(settings(database_dsn).database) for _ in range(3)]
    yield made
    for pool in made:
        await pool.close()


def monitor(
    dsn: str, pool: asyncpg.Pool[asyncpg.Record], door: Door, name: str
) -> tuple[HealthMonitor, Notices, History]:
    notices, history = Notices(), History()
    found = HealthMonitor(
        settings(dsn),
        pool=pool,
        ami=AmiClient("127.0.0.1", 1, "nobody", SecretStr("")),
        notifier=notices,
        record=history.record,
        instance_id=name,
        extra_checks=[Check("door", "the door is closed", door.check)],
    )
    return found, notices, history


async def runs(monitors: list[HealthMonitor], count: int) -> None:
    for _ in range(count):
        for each in monitors:
            await each.run_once(["door"])


async def health_events(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT kind FROM alarm_events WHERE kind LIKE 'health_%' ORDER BY id"
        )
    finally:
        await connection.close()
    return [row["kind"] for row in rows]


async def test_two_servers_tell_each_transition_once(
    database_dsn: str, pools: list[asyncpg.Pool[asyncpg.Record]]
) -> None:
    door = Door()
    (a, notices_a, _), (b, notices_b, _) = (
        monitor(database_dsn, pools[0], door, "a"),
        monitor(database_dsn, pools[1], door, "b"),
    )
    await runs([a, b], 2)
    assert (a.state, b.state, a.site_degraded) == (Health.HEALTHY, Health.HEALTHY, False)
    assert notices_a.kinds + notices_b.kinds == []

    door.finding = Finding.fail("open", "close it")
    await runs([a, b], 1)
    assert a.state is Health.HEALTHY  # one failing run raises nothing
    await runs([a, b], 1)
    assert (a.state, b.state, a.site_degraded, b.site_degraded) == (
        Health.DEGRADED,
        Health.DEGRADED,
        True,
        True,
    )
    assert notices_a.kinds + notices_b.kinds == ["health_degraded"]
    assert "FAIL door (a): open" in notices_a.sent[0].text

    door.finding = Finding.ok("closed")
    await runs([a, b], 2)
    assert notices_a.kinds + notices_b.kinds == ["health_degraded", "health_recovered"]
    assert await health_events(database_dsn) == ["health_degraded", "health_recovered"]


async def test_without_postgresql_a_server_tells_it_itself_then_corrects(
    database_dsn: str, pools: list[asyncpg.Pool[asyncpg.Record]], pg_cluster: PgServer
) -> None:
    door = Door()
    server, notices, history = monitor(database_dsn, pools[2], door, "c")
    await runs([server], 2)
    assert server.site_degraded is False

    name = urlsplit(database_dsn).path.lstrip("/")
    pg_cluster.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    pg_cluster.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )
    try:
        door.finding = Finding.fail("open")
        await runs([server], 2)
        assert server.state is Health.DEGRADED
        assert server.site_degraded is None  # PostgreSQL could not be asked
        assert notices.kinds == ["health_degraded"]
        assert [str(e.kind) for e in history.events] == ["health_degraded"]
        door.finding = Finding.ok("closed")
        await runs([server], 1)
    finally:
        pg_cluster.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    # Back, and the door closed again: the site was never marked degraded in PostgreSQL,
    # but people were told it was: the recovery is told too, once.
    await runs([server], 2)
    assert server.state is Health.HEALTHY
    assert server.site_degraded is False
    assert notices.kinds == ["health_degraded", "health_recovered"]
    assert [str(e.kind) for e in history.events] == ["health_degraded", "health_recovered"]
    await runs([server], 2)
    assert notices.kinds == ["health_degraded", "health_recovered"]
