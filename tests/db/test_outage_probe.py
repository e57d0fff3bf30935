"""An outage is declared when PostgreSQL does not answer, not when the pool is busy
(fastagi/alarms/outage.py, the probe; fastagi/store/pool.py, ``answers``).

A call that waited for a pooled connection past its deadline fails like a call to a
PostgreSQL that is down. Declared an outage, it refused every deactivation until the
maintenance saw PostgreSQL again (1,000 alarms at once did that, docs/performance.md)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi.alarms.outage import DatabaseDown, Outage
from fastagi.config import DatabaseSettings
from fastagi.store.pool import answers

pytestmark = pytest.mark.db

# The deadline of each call, and so of the probe after it: a connection to the test
# cluster takes milliseconds, a second leaves room for a loaded machine.
DEADLINE = 1.0


def probe_of(dsn: str) -> Callable[[], Awaitable[None]]:
    return functools.partial(answers, DatabaseSettings(dsn=SecretStr(dsn)))


def refusing_dsn() -> str:
    """A DSN whose port nothing listens on: connections to it are refused."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    return f"postgresql://fastagi@127.0.0.1:{port}/fastagi"


async def test_a_call_that_waits_out_a_busy_pool_declares_no_outage(
    one_connection_pool: asyncpg.Pool[asyncpg.Record], database_dsn: str
) -> None:
    outage = Outage(probe=probe_of(database_dsn))

    async with one_connection_pool.acquire():  # the pool's only connection, taken
        with pytest.raises(TimeoutError):
            await outage.call("lookup", lambda: one_connection_pool.fetchval("SELECT 1"), DEADLINE)
        await outage.probed()
        down_while_busy = outage.down
    # Not refused without being tried, as it would be in an outage.
    answer = await outage.call("lookup", lambda: one_connection_pool.fetchval("SELECT 1"), DEADLINE)
    await outage.close()

    assert not down_while_busy
    assert answer == 1


async def test_a_postgresql_that_refuses_connections_is_an_outage() -> None:
    dsn = refusing_dsn()
    outage = Outage(probe=probe_of(dsn))

    with pytest.raises(ConnectionRefusedError):
        await outage.call("lookup", lambda: asyncpg.connect(dsn), DEADLINE)
    await outage.probed()
    down = outage.down
    with pytest.raises(DatabaseDown):  # not even tried now
        await outage.call("lookup", lambda: asyncpg.connect(dsn), DEADLINE)
    await outage.close()

    assert down
