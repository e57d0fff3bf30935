"""Numbered SQL migrations: ``sql/NNN_name.sql``, applied in order, each exactly once.

Every migration runs in its own transaction together with the row that records it in
``schema_migrations`` (name, SHA-256 of the file, time applied), so a failing file
leaves nothing behind. A session advisory lock serialises concurrent runners: the
second one waits, then finds nothing left to do. A migration that was applied and has
since changed on disk, or vanished from it, stops the run: the database no longer
matches the files, and a person has to decide which is right.

Because of the transaction, a migration cannot use statements that refuse to run in
one (``CREATE INDEX CONCURRENTLY``, ``VACUUM``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import site
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# pg_advisory_lock key: the bytes "fastagi\x00" as a bigint; any constant would do as long
# as every runner uses the same one.
MIGRATION_LOCK_KEY = int.from_bytes(b"fastagi\x00", "big", signed=True)
MIGRATION_FILE = re.compile(r"(?P<number>\d{3,})_(?P<label>[a-z0-9_]+)\.sql")
SHARE_DIR = Path("share") / "fastagi-panic" / "sql"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations cannot be applied; the message names the file and the reason."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # the file name, e.g. "001_foundation.sql"
    path: Path
    sql: str
    checksum: str  # SHA-256 of the file's bytes, hex


@dataclass(frozen=True)
class AppliedMigration:
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]
    changed: list[str]  # applied, but the file differs now
    missing: list[str]  # applied, but the file is gone

    @property
    def consistent(self) -> bool:
        return not self.changed and not self.missing


def find_migrations_dir() -> Path:
    """The repository's ``sql/`` in an editable install, else the installed copy.

    setup.cfg installs the files as data files under ``<prefix>/share/fastagi-panic/sql``:
    the environment's prefix, or the user base for ``pip install --user``.
    """
    repo = Path(__file__).resolve().parents[2]
    if (repo / "sql").is_dir() and (repo / "setup.cfg").is_file():
        return repo / "sql"
    candidates = [Path(sys.prefix) / SHARE_DIR, Path(site.getuserbase()) / SHARE_DIR]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every ``*.sql`` file of ``directory``, in order; a badly named one is an error."""
    directory = find_migrations_dir() if directory is None else directory
    if not directory.is_dir():
        raise MigrationError(f"no migrations directory at {directory}")
    migrations: list[Migration] = []
    for path in directory.glob("*.sql"):
        match = MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: a migration file is named NNN_name.sql (digits, then lower-case "
                "letters, digits and underscores)"
            )
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{path}: not UTF-8 ({exc})") from None
        migrations.append(
            Migration(
                number=int(match["number"]),
                name=path.name,
                path=path,
                sql=sql,
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    migrations.sort(key=lambda migration: (migration.number, migration.name))
    for before, after in itertools.pairwise(migrations):
        if before.number == after.number:
            raise MigrationError(f"{before.path} and {after.path} share the number {before.number}")
    return migrations


async def migrate(
    connection: asyncpg.Connection[asyncpg.Record], directory: Path | None = None
) -> list[str]:
    """Apply the missing migrations in order; return the names of those applied."""
    migrations = load_migrations(directory)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(_CREATE_TABLE)
        applied = await _applied(connection)
        _check_consistent(_status(migrations, applied))
        latest = max(applied, key=_number_of, default=None)
        done: list[str] = []
        for migration in migrations:
            if migration.name in applied:
                continue
            if latest is not None and migration.number < _number_of(latest):
                raise MigrationError(
                    f"{migration.path} is not applied, but the later {latest} is; "
                    "renumber it after the last applied migration"
                )
            await _apply(connection, migration)
            done.append(migration.name)
        return done
    finally:
        if not connection.is_closed():
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def status(
    connection: asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record],
    directory: Path | None = None,
) -> MigrationStatus:
    """What is applied, what is pending, what disagrees with the files. Changes nothing."""
    migrations = load_migrations(directory)
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(connection) if exists else {}
    return _status(migrations, applied)


async def _apply(connection: asyncpg.Connection[asyncpg.Record], migration: Migration) -> None:
    try:
        async with connection.transaction():
            # No arguments: the simple query protocol, so a file may hold many statements.
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        where = _line_of(migration.sql, exc.position)
        raise MigrationError(
            f"{migration.path}{where}: {exc.__class__.__name__}: {exc}; "
            "the migration was rolled back"
        ) from exc


async def _applied(
    connection: asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record],
) -> dict[str, AppliedMigration]:
    rows = await connection.fetch(
        "SELECT name, checksum, applied_at FROM schema_migrations ORDER BY name"
    )
    return {
        row["name"]: AppliedMigration(row["name"], row["checksum"], row["applied_at"])
        for row in rows
    }


def _status(migrations: list[Migration], applied: dict[str, AppliedMigration]) -> MigrationStatus:
    on_disk = {migration.name: migration for migration in migrations}
    return MigrationStatus(
        applied=sorted(applied.values(), key=lambda row: (_number_of(row.name), row.name)),
        pending=[migration for migration in migrations if migration.name not in applied],
        changed=[
            name
            for name, row in applied.items()
            if name in on_disk and on_disk[name].checksum != row.checksum
        ],
        missing=[name for name in applied if name not in on_disk],
    )


def _check_consistent(found: MigrationStatus) -> None:
    problems = [
        f"{name} was applied with another checksum: the file changed after it ran"
        for name in found.changed
    ] + [f"{name} was applied but is missing from disk" for name in found.missing]
    if problems:
        raise MigrationError(
            "the database does not match the migration files: "
            + "; ".join(problems)
            + " (write a new migration instead of editing or deleting an applied one)"
        )


def _number_of(name: str) -> int:
    match = re.match(r"\d+", name)
    return int(match.group()) if match else -1


def _line_of(sql: str, position: str | None) -> str:
    """`` line N`` for a server error position (1-based characters), or nothing."""
    if not position or not position.isdigit():
        return ""
    return f" line {sql.count(chr(10), 0, int(position) - 1) + 1}"
