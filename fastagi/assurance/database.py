"""PostgreSQL: it answers, its schema is the one the files describe, and a NOTIFY reaches
a session that LISTENs (how every change reaches every server)."""

from __future__ import annotations

import asyncpg

from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.store.health import CHECK_CHANNEL, HealthStore
from fastagi.store.migrations import MigrationError
from fastagi.store.pool import redact_dsn

# A NOTIFY that takes longer than this on a healthy server means trouble (a loaded
# server, a slow link): changes would reach the servers late.
SLOW_NOTIFY_SECONDS = 1.0
NOTIFY_TIMEOUT = 5.0

DATABASE_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def postgresql(context: Context) -> Finding:
    where = redact_dsn(context.settings.database.dsn.get_secret_value())
    try:
        pool = await context.open_pool()
        version = await HealthStore(pool).server_version()
    except DATABASE_ERRORS as exc:
        return Finding.fail(
            f"cannot connect to PostgreSQL at {where}: {str(exc) or type(exc).__name__}",
            "is PostgreSQL running, and are database.dsn's host, port, user, password and"
            " database right?",
        )
    return Finding.ok(f"PostgreSQL {version} at {where}")


async def schema(context: Context) -> Finding:
    try:
        found = await HealthStore(context.pool).migrations()
    except MigrationError as exc:
        return Finding.fail(str(exc), "reinstall the package: its sql/ files are broken")
    if found.changed or found.missing:
        problems = [f"{name} changed on disk since it was applied" for name in found.changed]
        problems += [f"{name} was applied but is not among the files" for name in found.missing]
        return Finding.fail(
            "the database does not match the migration files: " + "; ".join(problems),
            "a newer or older package than the one that migrated the database?"
            " `fastagi db status` lists them",
        )
    if found.pending:
        names = ", ".join(migration.name for migration in found.pending)
        return Finding.fail(
            f"{len(found.pending)} migration(s) not applied: {names}",
            "run `fastagi db migrate`",
        )
    latest = found.applied[-1].name if found.applied else "none"
    return Finding.ok(f"all {len(found.applied)} migrations applied (latest {latest})")


async def listen(context: Context) -> Finding:
    try:
        seconds = await HealthStore(context.pool).notify_round_trip(NOTIFY_TIMEOUT)
    except TimeoutError:
        return Finding.fail(
            f"a NOTIFY on {CHECK_CHANNEL} did not reach a LISTENing session within"
            f" {NOTIFY_TIMEOUT:g} s: changes and deactivations would not reach the servers",
            "is a connection pooler in transaction mode (pgbouncer) between us and"
            " PostgreSQL? LISTEN needs a session of its own: connect directly",
        )
    if seconds > SLOW_NOTIFY_SECONDS:
        return Finding.warn(
            f"a NOTIFY took {seconds:.2f} s to arrive: changes reach the servers late",
            "is PostgreSQL overloaded, or far away?",
        )
    return Finding.ok(f"a NOTIFY reached a LISTENing session in {seconds * 1000:.0f} ms")


CHECKS = (
    Check("postgresql", "PostgreSQL answers", postgresql),
    Check("migrations", "the schema is the one the files describe", schema, ("postgresql",)),
    Check("listen", "a NOTIFY reaches a session that LISTENs", listen, ("postgresql",)),
)
