"""What ``fastagi check`` asks PostgreSQL itself: who answers, and whether a ``NOTIFY``
reaches a session that ``LISTEN``s (the way every change reaches every server,
fastagi/store/changes.py)."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from fastagi.store.migrations import MigrationStatus, status
from fastagi.store.pool import release_session

# A channel of its own: no server listens on it, so a check never wakes one.
CHECK_CHANNEL = "fastagi_check"


class HealthStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def server_version(self) -> str:
        """``server_version`` as PostgreSQL reports it (``15.4 (Debian 15.4-1)``)."""
        version: str = await self._pool.fetchval("SHOW server_version")
        return version

    async def migrations(self) -> MigrationStatus:
        """The migrations applied and pending (:func:`fastagi.store.migrations.status`)."""
        async with self._pool.acquire() as connection:
            return await status(connection)

    async def notify_round_trip(self, timeout: float) -> float:  # noqa: ASYNC109
        """Seconds from a ``NOTIFY`` sent on one connection to its arrival on another that
        ``LISTEN``s; TimeoutError when it does not arrive within ``timeout``.

        The payload is a fresh random token, so a notification of another check running
        at the same time (another server's schedule) is not mistaken for ours.
        """
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()

        def on_notify(_connection: object, _pid: int, _channel: str, payload: object) -> None:
            if payload == token and not arrived.done():
                arrived.set_result(loop.time())

        async with asyncio.timeout(timeout):
            listener = await self._pool.acquire()
            try:
                await listener.add_listener(CHECK_CHANNEL, on_notify)
                sent = loop.time()
                # Another connection of the pool: the notification travels through the
                # server, as a change made by the CLI on one host reaches a server on
                # another.
                await self._pool.execute("SELECT pg_notify($1, $2)", CHECK_CHANNEL, token)
                received: float = await arrived
            finally:
                # UNLISTEN even when the deadline cut the check short.
                await release_session(self._pool, listener)
        return received - sent
