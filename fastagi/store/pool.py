"""The asyncpg connection pool, built from the settings."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fastagi.config import DatabaseSettings


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
    )


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
