"""``fastagi db migrate`` and ``fastagi db status``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import asyncpg

from fastagi.cli.common import database_dsn, fail
from fastagi.store import migrations
from fastagi.store.pool import redact_dsn

CONNECT_TIMEOUT = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="database schema: migrate, status")
    commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)

    migrate = commands.add_parser("migrate", help="apply the pending migrations")
    _add_common(migrate)
    migrate.set_defaults(handler=run_migrate)

    status = commands.add_parser("status", help="list applied and pending migrations")
    _add_common(status)
    status.set_defaults(handler=run_status)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="PostgreSQL URL (default: database.dsn from the settings)")
    parser.add_argument(
        "--migrations-dir",
        type=Path,
        help="directory of NNN_name.sql files (default: the installed ones)",
    )


def run_migrate(args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(database_dsn(args), args.migrations_dir))
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    found = asyncio.run(_status(database_dsn(args), args.migrations_dir))
    for row in found.applied:
        state = (
            "changed"
            if row.name in found.changed
            else "missing"
            if row.name in found.missing
            else "applied"
        )
        print(f"{state:8} {row.name}  {row.applied_at.isoformat(timespec='seconds')}")
    for migration in found.pending:
        print(f"{'pending':8} {migration.name}")
    if not found.applied and not found.pending:
        print("no migrations")
    return 0 if found.consistent else 1


async def _migrate(dsn: str, directory: Path | None) -> list[str]:
    connection = await _connect(dsn)
    try:
        return await migrations.migrate(connection, directory)
    except migrations.MigrationError as exc:
        fail(str(exc))
    finally:
        await connection.close()


async def _status(dsn: str, directory: Path | None) -> migrations.MigrationStatus:
    connection = await _connect(dsn)
    try:
        return await migrations.status(connection, directory)
    except migrations.MigrationError as exc:
        fail(str(exc))
    finally:
        await connection.close()


async def _connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        reason = str(exc) or exc.__class__.__name__
        fail(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}")
