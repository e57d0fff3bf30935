"""``fastagi db migrate`` and ``fastagi db status``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg

from fastagi.cli.common import (
    CONNECT_ERRORS,
    CONNECT_TIMEOUT,
    database_dsn,
    fail,
    fail_to_connect,
)
from fastagi.store import migrations

_R = TypeVar("_R")


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
    applied = asyncio.run(_on_database(database_dsn(args), args.migrations_dir, migrations.migrate))
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    found = asyncio.run(_on_database(database_dsn(args), args.migrations_dir, migrations.status))
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


async def _on_database(
    dsn: str,
    directory: Path | None,
    work: Callable[[asyncpg.Connection[asyncpg.Record], Path | None], Awaitable[_R]],
) -> _R:
    """``work`` (migrations.migrate or migrations.status) on a connection of its own; a
    migration error ends the command with its message."""
    connection = await _connect(dsn)
    try:
        return await work(connection, directory)
    except migrations.MigrationError as exc:
        fail(str(exc))
    finally:
        await connection.close()


async def _connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except CONNECT_ERRORS as exc:
        fail_to_connect(dsn, exc)
