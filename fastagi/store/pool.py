"""The asyncpg connection pool, built from the settings.

Theory of operation. asyncpg's pool resets each connection it takes back: its own part
(an open transaction rolled back, the connection's Python-side listeners dropped) and a
query to PostgreSQL (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
``Connection.get_reset_query``). That query is a round trip after every pooled
statement: with it, a pooled INSERT held its connection 1.8-1.9x as long and cost 1.6-1.7x
the client CPU (``docs/performance.md``, "The pool's reset"). Our statements leave no session
state behind them (no ``SET``, no session advisory lock, no cursor outside a
transaction, no ``LISTEN``), so the pool skips the query (:func:`_keep_session`) and
keeps asyncpg's own part. The few connections that do carry session state (the
LISTENing one, the leader's advisory locks) are held apart from the pool's traffic for
as long as they live and go back through :func:`release_session`, which runs the reset
query first.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fastagi.config import DatabaseSettings
from fastagi.store._common import Connection


async def create_pool(
    settings: DatabaseSettings,
    *,
    max_size: int | None = None,
    connect_timeout: float = 60.0,
) -> asyncpg.Pool[asyncpg.Record]:
    """Open a pool of ``pool_min_size`` .. ``pool_max_size`` (or ``max_size``)
    connections to ``dsn``; each connection attempt gives up after ``connect_timeout``."""
    largest = settings.pool_max_size if max_size is None else max_size
    return await asyncpg.create_pool(
        dsn=settings.dsn.get_secret_value(),
        min_size=min(settings.pool_min_size, largest),
        max_size=largest,
        timeout=connect_timeout,
        reset=_keep_session,
    )


async def _keep_session(_connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset after asyncpg's own part (see the module's docstring): nothing."""


async def release_session(pool: asyncpg.Pool[asyncpg.Record], connection: Connection) -> None:
    """Give back a connection that carried session state (LISTEN, session advisory
    locks), reset as a new session; one that cannot be reset is closed, never pooled.
    Raises nothing but a cancellation (after closing the connection)."""
    try:
        if not connection.is_closed():
            await connection.reset()
    except asyncio.CancelledError:
        _close(connection)
        raise
    except Exception:
        _close(connection)
    finally:
        with contextlib.suppress(Exception):
            await pool.release(connection)


async def answers(settings: DatabaseSettings) -> None:
    """Raise unless PostgreSQL answers a connection of its own, outside the pool: tells a
    pool with no connection free (whose calls time out) from a PostgreSQL that is down.
    The caller bounds the wait."""
    connection = await asyncpg.connect(settings.dsn.get_secret_value())
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


def _close(connection: Connection) -> None:
    # A connection asyncpg saw lost is already back in the pool: then its proxy refuses.
    with contextlib.suppress(Exception):
        connection.terminate()


def redact_dsn(dsn: str) -> str:
    """The DSN with its password, if any, replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
