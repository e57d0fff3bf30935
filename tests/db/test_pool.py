"""The pool's reset (fastagi/store/pool.py): a pooled statement is one round trip, and a
connection that carried session state goes back as a new session.

Each test holds a pool of one connection, so the connection it takes again is the one it
gave back (or its replacement); it takes it with a deadline, so a connection never given
back fails the test instead of hanging it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench import pool_reset
from fastagi.store.pool import release_session


@pytest.fixture
async def observer(database_dsn: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    connection = await asyncpg.connect(database_dsn)
    yield connection
    await connection.close()


async def test_a_pooled_statement_is_the_last_query_of_its_session(
    one_connection_pool: asyncpg.Pool[asyncpg.Record],
    observer: asyncpg.Connection[asyncpg.Record],
) -> None:
    # asyncpg's default reset would follow it with "SELECT pg_advisory_unlock_all();
    # CLOSE ALL; UNLISTEN *; RESET ALL;", a round trip more per statement.
    async with one_connection_pool.acquire() as connection:
        pid = connection.get_server_pid()
    await one_connection_pool.execute("SELECT 'the statement'")

    last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)

    assert last == "SELECT 'the statement'"


async def test_release_session_gives_back_a_new_session(
    one_connection_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    connection = await one_connection_pool.acquire()
    pid = connection.get_server_pid()
    await connection.add_listener("fastagi_test", lambda *_args: None)
    await connection.execute("SELECT pg_advisory_lock(4242)")
    await connection.execute("SET application_name = 'carried over'")

    await release_session(one_connection_pool, connection)

    async with one_connection_pool.acquire(timeout=5) as again:
        assert again.get_server_pid() == pid  # the same session, reset
        assert await again.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
        assert await again.fetchval(locks, pid) == 0
        assert await again.fetchval("SHOW application_name") != "carried over"


async def test_a_connection_that_cannot_be_reset_is_closed_not_pooled(
    one_connection_pool: asyncpg.Pool[asyncpg.Record],
    observer: asyncpg.Connection[asyncpg.Record],
) -> None:
    connection = await one_connection_pool.acquire()
    pid = connection.get_server_pid()
    await connection.execute("SELECT pg_advisory_lock(4243)")
    # The backend ends under it: its reset fails.
    await observer.execute("SELECT pg_terminate_backend($1)", pid)

    await release_session(one_connection_pool, connection)

    async with one_connection_pool.acquire(timeout=5) as again:
        assert again.get_server_pid() != pid
        assert await again.fetchval("SELECT pg_try_advisory_lock(4243)") is True


async def test_an_open_transaction_is_still_rolled_back_on_release(
    one_connection_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    await one_connection_pool.execute("CREATE TABLE kept (value int)")
    connection = await one_connection_pool.acquire()
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute("INSERT INTO kept VALUES (1)")

    await one_connection_pool.release(connection)

    assert await one_connection_pool.fetchval("SELECT count(*) FROM kept") == 0


@pytest.mark.db
def test_the_pool_reset_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    # A smoke run at a tiny size (the figures are make bench-scale's).
    assert pool_reset.main(["--statements", "20", "--concurrency", "1,2", "--repeats", "2"]) == 0

    out = capsys.readouterr().out
    assert "ours / asyncpg's default pool, repetition by repetition:" in out
    assert out.count("  rep ") == 8  # 2 repetitions x 2 levels x 2 pools
