"""Deactivators and PIN lockouts (``deactivators``, ``deactivation_lockouts``, and the
shared history for the global limit). The PIN hash never leaves this module but to the
deactivation flow's verification."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.domain.pins import is_pin_hash
from fastagi.store._common import StoreError, check_extension, row_to


@dataclass(frozen=True)
class Deactivator:
    """An extension allowed to deactivate alarms. The PIN hash stays in the database."""

    extension: str
    created_at: datetime
    updated_at: datetime
    locked_until: datetime | None  # set while a lockout runs


class DeactivatorStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def deactivator_pin_hash(self, extension: str) -> str | None:
        pin_hash: str | None = await self._pool.fetchval(
            "SELECT pin_hash FROM deactivators WHERE extension = $1", extension
        )
        return pin_hash

    async def set_deactivator(self, extension: str, pin_hash: str) -> bool:
        """Allow ``extension`` to deactivate with the PIN of ``pin_hash``; True if new."""
        check_extension(extension)
        if not is_pin_hash(pin_hash):
            raise StoreError("not a PIN hash: make one with fastagi.domain.pins.hash_pin")
        created: bool = await self._pool.fetchval(
            """
            INSERT INTO deactivators (extension, pin_hash) VALUES ($1, $2)
            ON CONFLICT (extension) DO UPDATE
                SET pin_hash = excluded.pin_hash, updated_at = now()
            RETURNING xmax = 0
            """,
            extension,
            pin_hash,
        )
        return created

    async def remove_deactivator(self, extension: str) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                "DELETE FROM deactivators WHERE extension = $1", extension
            )
            if status == "DELETE 0":
                raise StoreError(f"extension '{extension}' is not a deactivator", field="extension")
            await connection.execute(
                "DELETE FROM deactivation_lockouts WHERE extension = $1", extension
            )

    async def list_deactivators(self) -> list[Deactivator]:
        rows = await self._pool.fetch(
            """
            SELECT d.extension, d.created_at, d.updated_at,
                   CASE WHEN l.locked_until > now() THEN l.locked_until END AS locked_until
            FROM deactivators d
            LEFT JOIN deactivation_lockouts l USING (extension)
            ORDER BY length(d.extension), d.extension
            """
        )
        return [row_to(Deactivator, row) for row in rows]

    async def lockout_until(self, extension: str) -> datetime | None:
        """When the extension's lockout ends, while one runs; else None."""
        until: datetime | None = await self._pool.fetchval(
            """
            SELECT locked_until FROM deactivation_lockouts
            WHERE extension = $1 AND locked_until > now()
            """,
            extension,
        )
        return until

    async def record_pin_failure(
        self, extension: str, max_failures: int, lockout_seconds: int
    ) -> datetime | None:
        """Count a wrong PIN; return the end of the lockout when this failure starts one.

        Failures are counted per extension across calls and forgotten ``lockout_seconds``
        after the last one; the ``max_failures``-th locks the extension out for
        ``lockout_seconds`` and starts the count again. ``lockout_seconds=0``: no lockout.
        """
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if lockout_seconds <= 0:
            return None
        async with self._pool.acquire() as connection, connection.transaction():
            failures: int = await connection.fetchval(
                """
                INSERT INTO deactivation_lockouts AS l (extension, failures, last_failure_at)
                VALUES ($1, 1, now())
                ON CONFLICT (extension) DO UPDATE SET
                    failures = CASE
                        WHEN l.last_failure_at > now() - make_interval(secs => $2)
                        THEN l.failures + 1 ELSE 1 END,
                    last_failure_at = now()
                RETURNING failures
                """,
                extension,
                float(lockout_seconds),
            )
            if failures < max_failures:
                return None
            until: datetime = await connection.fetchval(
                """
                UPDATE deactivation_lockouts
                SET failures = 0, locked_until = now() + make_interval(secs => $2)
                WHERE extension = $1
                RETURNING locked_until
                """,
                extension,
                float(lockout_seconds),
            )
            return until

    async def global_lockout_until(
        self, max_failures: int, window_seconds: float, lockout_seconds: float
    ) -> datetime | None:
        """When the system-wide PIN lockout ends, while one runs; else None.

        Counted from the ``deactivation_failed`` events of every extension and every
        server (the history is shared, so the limit holds across instances): whenever
        ``max_failures`` wrong PINs fell within ``window_seconds``, every deactivation is
        refused until ``lockout_seconds`` after the last of them. ``max_failures=0``: off.
        """
        if max_failures < 1 or lockout_seconds <= 0:
            return None
        until: datetime | None = await self._pool.fetchval(
            """
            SELECT max(occurred_at) + make_interval(secs => $3::float8)
            FROM (
                SELECT occurred_at,
                       lead(occurred_at, $1::int - 1) OVER (ORDER BY occurred_at DESC) AS nth
                FROM alarm_events
                WHERE kind = 'deactivation_failed'
                  AND occurred_at > now() - make_interval(secs => $2::float8 + $3::float8)
            ) failures
            WHERE nth IS NOT NULL AND occurred_at - nth <= make_interval(secs => $2::float8)
            HAVING max(occurred_at) + make_interval(secs => $3::float8) > now()
            """,
            max_failures,
            float(window_seconds),
            float(lockout_seconds),
        )
        return until

    async def clear_pin_failures(self, extension: str) -> None:
        """Forget the extension's wrong PINs and end its lockout (a right PIN, an admin)."""
        await self._pool.execute(
            "DELETE FROM deactivation_lockouts WHERE extension = $1", extension
        )
