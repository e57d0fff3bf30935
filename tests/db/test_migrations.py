"""The migrations runner, ``fastagi db``, and the probe store, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fastagi import cli
from fastagi.store.migrations import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    find_migrations_dir,
    load_migrations,
    migrate,
    status,
)
from fastagi.store.probe import ProbeStore

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

REPO_SQL = Path(__file__).resolve().parents[2] / "sql"


@pytest.fixture
async def conn(empty_database_dsn: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    connection = await asyncpg.connect(empty_database_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "sql"
    directory.mkdir()
    return directory


async def table_exists(connection: asyncpg.Connection[asyncpg.Record], name: str) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


def test_the_repository_migrations_are_found() -> None:
    assert find_migrations_dir() == REPO_SQL
    names = [migration.name for migration in load_migrations()]
    assert names[0] == "001_foundation.sql"


async def test_migrate_applies_the_foundation_once(
    conn: asyncpg.Connection[asyncpg.Record],
) -> None:
    first = await migrate(conn)
    second = await migrate(conn)

    assert first[0] == "001_foundation.sql"
    assert first == [migration.name for migration in load_migrations()]
    assert second == []
    assert await table_exists(conn, "probe_calls")
    rows = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
    assert len(rows) == len(first)
    row = next(row for row in rows if row["name"] == "001_foundation.sql")
    expected = hashlib.sha256((REPO_SQL / "001_foundation.sql").read_bytes()).hexdigest()
    assert row["checksum"] == expected
    assert row["applied_at"] is not None


async def test_migrations_run_in_number_order(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    (sql_dir / "010_second.sql").write_text("INSERT INTO steps VALUES ('second');")
    (sql_dir / "002_first.sql").write_text("CREATE TABLE steps (step text);")

    applied = await migrate(conn, sql_dir)

    assert applied == ["002_first.sql", "010_second.sql"]
    assert await conn.fetchval("SELECT step FROM steps") == "second"


async def test_a_changed_applied_migration_is_refused(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    migration = sql_dir / "001_a.sql"
    migration.write_text("CREATE TABLE a (id int);")
    await migrate(conn, sql_dir)
    migration.write_text("CREATE TABLE a (id bigint);")
    (sql_dir / "002_b.sql").write_text("CREATE TABLE b (id int);")

    with pytest.raises(MigrationError, match=r"001_a\.sql was applied with another checksum"):
        await migrate(conn, sql_dir)

    assert not await table_exists(conn, "b")


async def test_a_missing_applied_migration_is_refused(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (id int);")
    await migrate(conn, sql_dir)
    (sql_dir / "001_a.sql").unlink()

    with pytest.raises(MigrationError, match=r"001_a\.sql was applied but is missing from disk"):
        await migrate(conn, sql_dir)


async def test_a_new_migration_older_than_an_applied_one_is_refused(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    (sql_dir / "002_b.sql").write_text("CREATE TABLE b (id int);")
    await migrate(conn, sql_dir)
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (id int);")

    with pytest.raises(MigrationError, match=r"001_a\.sql is not applied, but the later 002_b"):
        await migrate(conn, sql_dir)


async def test_bad_sql_rolls_back_and_names_the_file(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    (sql_dir / "001_good.sql").write_text("CREATE TABLE good (id int);")
    bad = sql_dir / "002_bad.sql"
    bad.write_text("CREATE TABLE half (id int);\n\nCREATE TABLEE oops (id int);\n")

    with pytest.raises(MigrationError) as caught:
        await migrate(conn, sql_dir)

    message = str(caught.value)
    assert f"{bad} line 3: PostgresSyntaxError" in message
    assert "rolled back" in message
    assert await table_exists(conn, "good")
    assert not await table_exists(conn, "half")
    assert await conn.fetchval("SELECT array_agg(name) FROM schema_migrations") == ["001_good.sql"]


def test_badly_named_files_are_refused(sql_dir: Path) -> None:
    (sql_dir / "1-foundation.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"1-foundation\.sql: a migration file is named"):
        load_migrations(sql_dir)


def test_two_files_with_one_number_are_refused(sql_dir: Path) -> None:
    (sql_dir / "001_a.sql").write_text("SELECT 1;")
    (sql_dir / "001_b.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match="share the number 1"):
        load_migrations(sql_dir)


async def test_concurrent_runners_apply_each_migration_once(
    empty_database_dsn: str, sql_dir: Path
) -> None:
    (sql_dir / "001_counter.sql").write_text(
        "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);"
    )
    holder, first, second = [await asyncpg.connect(empty_database_dsn) for _ in range(3)]
    try:
        # Hold the lock so both runners are surely waiting on it at the same time.
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        runs = [asyncio.create_task(migrate(c, sql_dir)) for c in (first, second)]
        async with asyncio.timeout(10):
            # The server has no event to wait on: poll pg_locks.
            while await waiting_on_advisory_lock(holder) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        results = await asyncio.gather(*runs)

        assert sorted(results) == [[], ["001_counter.sql"]]
        assert await holder.fetchval("SELECT count(*) FROM runs") == 1
    finally:
        for connection in (holder, first, second):
            await connection.close()


async def waiting_on_advisory_lock(connection: asyncpg.Connection[asyncpg.Record]) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )
    return count


async def test_status_lists_applied_pending_and_changed(
    conn: asyncpg.Connection[asyncpg.Record], sql_dir: Path
) -> None:
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (id int);")
    before = await status(conn, sql_dir)
    await migrate(conn, sql_dir)
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (id bigint);")
    (sql_dir / "002_b.sql").write_text("CREATE TABLE b (id int);")
    after = await status(conn, sql_dir)

    assert [m.name for m in before.pending] == ["001_a.sql"]
    assert before.applied == []
    assert [m.name for m in after.applied] == ["001_a.sql"]
    assert [m.name for m in after.pending] == ["002_b.sql"]
    assert after.changed == ["001_a.sql"]
    assert not after.consistent


async def test_the_template_database_is_migrated(db_pool: asyncpg.Pool[asyncpg.Record]) -> None:
    names = await db_pool.fetchval("SELECT array_agg(name ORDER BY name) FROM schema_migrations")

    assert names == [migration.name for migration in load_migrations()]


async def test_probe_store_round_trip(db_pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store = ProbeStore(db_pool)

    first = await store.record("1700000000.1", "PJSIP/100-0001", "100", "Desk", "42", "probe")
    second = await store.record("1700000000.2", None, None, None, "", "probe?source=dialplan")
    recent = await store.list_recent(10)
    latest_only = await store.list_recent(1)

    assert second > first
    assert [call.id for call in recent] == [second, first]
    assert [call.id for call in latest_only] == [second]
    older = recent[1]
    assert (older.uniqueid, older.channel, older.callerid, older.calleridname) == (
        "1700000000.1",
        "PJSIP/100-0001",
        "100",
        "Desk",
    )
    assert (older.digits, older.route) == ("42", "probe")
    assert recent[0].channel is None
    assert recent[0].route == "probe?source=dialplan"
    assert older.created_at.tzinfo is not None


# -- the command line ------------------------------------------------------------------


def test_db_migrate_prints_what_it_applied(
    empty_database_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = cli.main(["db", "migrate", "--dsn", empty_database_dsn])
    first_out = capsys.readouterr().out
    second = cli.main(["db", "migrate", "--dsn", empty_database_dsn])
    second_out = capsys.readouterr().out

    assert first == 0
    assert "applied 001_foundation.sql" in first_out.splitlines()
    assert second == 0
    assert second_out == "up to date\n"


def test_db_migrate_reads_the_dsn_from_the_settings(
    empty_database_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FASTAGI_CONFIG", raising=False)
    monkeypatch.setenv("FASTAGI_DATABASE__DSN", empty_database_dsn)

    code = cli.main(["db", "migrate"])

    assert code == 0
    assert "applied 001_foundation.sql" in capsys.readouterr().out


def test_db_migrate_without_a_server_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["db", "migrate", "--dsn", "postgresql://postgres:hunter2@127.0.0.1:1/nope"])
    captured = capsys.readouterr()

    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "fastagi: error: cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/nope:"
    )
    assert "hunter2" not in captured.err


def test_db_migrate_reports_a_bad_migration(
    empty_database_dsn: str,
    sql_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (sql_dir / "001_bad.sql").write_text("SELEC 1;")

    code = cli.main(
        ["db", "migrate", "--dsn", empty_database_dsn, "--migrations-dir", str(sql_dir)]
    )
    err = capsys.readouterr().err

    assert code == 2
    assert err.startswith(f"fastagi: error: {sql_dir / '001_bad.sql'} line 1: PostgresSyntaxError")


def test_db_status(
    empty_database_dsn: str,
    sql_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (id int);")
    dsn_args = ["--dsn", empty_database_dsn, "--migrations-dir", str(sql_dir)]
    assert cli.main(["db", "migrate", *dsn_args]) == 0
    (sql_dir / "002_b.sql").write_text("CREATE TABLE b (id int);")
    capsys.readouterr()

    code = cli.main(["db", "status", *dsn_args])
    lines = capsys.readouterr().out.splitlines()

    assert code == 0
    assert lines[0].startswith("applied  001_a.sql  ")
    assert lines[1] == "pending  002_b.sql"
