"""The web console's users, sessions and failed logins (sql/005_web.sql).

Sessions live here, not in the memory of one server, so every server behind the same
database accepts them and removing a user or changing a role takes effect at the next
request. A session is found by the SHA-256 of its token; the token itself is only in the
user's cookie.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fastagi.domain.events import HistoryEvent
from fastagi.store._common import Connection, StoreError, row_to
from fastagi.store.board import BOARD_CHANNEL
from fastagi.store.history import insert_event

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class WebUser:
    id: int
    name: str
    role: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WebSession:
    """A live session and its user, as of this request."""

    user_id: int
    user_name: str
    role: str
    csrf_token: str
    expires_at: datetime


class LastAdminError(StoreError):
    """The change would leave the console without an admin (nobody could manage it)."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _keep_an_admin(connection: Connection, name: str) -> asyncpg.Record:
    """The user ``name`` (locked), refused with :class:`LastAdminError` when it is the
    only admin. The admins' rows are locked first, in id order: of two transactions
    demoting or removing the last two admins at once, the second waits for the first and
    then sees one admin left (READ COMMITTED re-reads a locked row that changed)."""
    admins = await connection.fetch(
        "SELECT id FROM web_users WHERE role = 'admin' ORDER BY id FOR UPDATE"
    )
    row = await connection.fetchrow(
        "SELECT * FROM web_users WHERE lower(name) = lower($1) FOR UPDATE", name
    )
    if row is None:
        raise StoreError(f"unknown user '{name}'")
    if row["role"] == "admin" and [a["id"] for a in admins] == [row["id"]]:
        raise LastAdminError(f"'{row['name']}' is the last admin")
    return row


async def _end_streams(connection: Connection) -> None:
    """Wake every server's board feed (``NOTIFY fastagi_board``, at the commit): each open
    stream reads its session again at once, so a removed user's (or one whose password
    changed) ends now rather than at its next ping."""
    await connection.execute("SELECT pg_notify($1, '')", BOARD_CHANNEL)


class UserStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    # -- users ---------------------------------------------------------------------------

    async def add_user(self, name: str, role: str, password_hash: str) -> WebUser:
        try:
            row = await self._pool.fetchrow(
                """
                INSERT INTO web_users (name, role, password_hash) VALUES ($1, $2, $3)
                RETURNING *
                """,
                name,
                role,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise StoreError(f"user '{name}' exists already") from None
        except asyncpg.CheckViolationError:
            raise StoreError(
                f"bad user name '{name}' or role '{role}': a name is 1 to 64 letters, digits"
                f" or . _ @ - (starting with a letter or digit); roles: {', '.join(ROLES)}"
            ) from None
        assert row is not None
        return row_to(WebUser, row)

    async def remove_user(self, name: str) -> WebUser:
        """Remove the user, unless it is the last admin (:class:`LastAdminError`); its
        sessions end with it (ON DELETE CASCADE), open streams at once."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await _keep_an_admin(connection, name)
            await connection.execute("DELETE FROM web_users WHERE id = $1", row["id"])
            await _end_streams(connection)
            return row_to(WebUser, row)

    async def set_password(self, name: str, password_hash: str) -> WebUser:
        """Change the password and end every session of the user (log in again)."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """
                UPDATE web_users SET password_hash = $2, updated_at = now()
                WHERE lower(name) = lower($1) RETURNING *
                """,
                name,
                password_hash,
            )
            if row is None:
                raise StoreError(f"unknown user '{name}'")
            await connection.execute("DELETE FROM web_sessions WHERE user_id = $1", row["id"])
            await _end_streams(connection)
            return row_to(WebUser, row)

    async def set_role(self, name: str, role: str) -> WebUser:
        """Change the role, unless that demotes the last admin (:class:`LastAdminError`);
        open sessions have it at their next request."""
        async with self._pool.acquire() as connection, connection.transaction():
            if role != "admin":
                await _keep_an_admin(connection, name)
            try:
                row = await connection.fetchrow(
                    """
                    UPDATE web_users SET role = $2, updated_at = now()
                    WHERE lower(name) = lower($1) RETURNING *
                    """,
                    name,
                    role,
                )
            except asyncpg.CheckViolationError:
                raise StoreError(f"unknown role '{role}': {', '.join(ROLES)}") from None
            if row is None:
                raise StoreError(f"unknown user '{name}'")
            return row_to(WebUser, row)

    async def list_users(self) -> list[WebUser]:
        rows = await self._pool.fetch("SELECT * FROM web_users ORDER BY lower(name)")
        return [row_to(WebUser, row) for row in rows]

    async def last_logins(self) -> dict[int, datetime]:
        """When each user last logged in (user id -> time), from the history's ``login``
        events since the user was created (a removed user's namesake has its own);
        users who never did are absent."""
        rows = await self._pool.fetch(
            """
            SELECT u.id, max(e.occurred_at) AS last_login
            FROM web_users u
            JOIN alarm_events e
              ON e.kind = 'login'
             AND lower(e.details ->> 'user') = lower(u.name)
             AND e.occurred_at >= u.created_at
            GROUP BY u.id
            """
        )
        return {row["id"]: row["last_login"] for row in rows}

    async def credentials(self, name: str) -> tuple[WebUser, str] | None:
        """The user and its password hash, for a login."""
        row = await self._pool.fetchrow(
            "SELECT * FROM web_users WHERE lower(name) = lower($1)", name
        )
        return None if row is None else (row_to(WebUser, row), row["password_hash"])

    async def rehash_password(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replace a hash made with weaker parameters (unless it changed meanwhile)."""
        await self._pool.execute(
            "UPDATE web_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            user_id,
            old_hash,
            new_hash,
        )

    # -- sessions ------------------------------------------------------------------------

    async def open_session(
        self,
        token: str,
        *,
        user_id: int,
        csrf_token: str,
        lifetime: float,
        address: str,
        event: HistoryEvent,
    ) -> None:
        """Store the session and its ``login`` event, and forget the name's failures."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                """
                INSERT INTO web_sessions (token_hash, user_id, csrf_token, expires_at, address)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
                """,
                token_hash(token),
                user_id,
                csrf_token,
                lifetime,
                address,
            )
            await connection.execute(
                """
                DELETE FROM web_login_failures
                WHERE lower(user_name) = (SELECT lower(name) FROM web_users WHERE id = $1)
                """,
                user_id,
            )
            # Expired sessions go with each login: nothing else needs to sweep them.
            await connection.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
            await insert_event(connection, event)

    async def session(self, token: str) -> WebSession | None:
        """The live session of ``token`` with its user's current name and role; None
        when unknown, expired, or its user was removed."""
        row = await self._pool.fetchrow(
            """
            SELECT s.user_id, u.name AS user_name, u.role, s.csrf_token, s.expires_at
            FROM web_sessions s JOIN web_users u ON u.id = s.user_id
            WHERE s.token_hash = $1 AND s.expires_at > now()
            """,
            token_hash(token),
        )
        return None if row is None else row_to(WebSession, row)

    async def close_session(self, token: str, event: HistoryEvent | None) -> bool:
        """End the session (logout); its ``logout`` event in the same transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                "DELETE FROM web_sessions WHERE token_hash = $1", token_hash(token)
            )
            if status == "DELETE 0":
                return False
            if event is not None:
                await insert_event(connection, event)
            return True

    # -- failed logins -------------------------------------------------------------------

    async def recent_failures(self, name: str, address: str, window: float) -> tuple[int, int]:
        """Failed logins within the last ``window`` seconds: of this name, of this address."""
        row = await self._pool.fetchrow(
            """
            SELECT
                count(*) FILTER (WHERE lower(user_name) = lower($1)) AS by_name,
                count(*) FILTER (WHERE address = $2) AS by_address
            FROM web_login_failures
            WHERE occurred_at > now() - make_interval(secs => $3)
              AND (lower(user_name) = lower($1) OR address = $2)
            """,
            name,
            address,
            window,
        )
        assert row is not None
        return int(row["by_name"]), int(row["by_address"])

    async def record_failure(
        self, name: str, address: str, event: HistoryEvent, window: float
    ) -> None:
        """Count a failed login, and write its history event, in one transaction; the
        failures that left the window are swept (they no longer count)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO web_login_failures (user_name, address) VALUES ($1, $2)",
                name[:200],
                address,
            )
            await insert_event(connection, event)
            await connection.execute(
                "DELETE FROM web_login_failures"
                " WHERE occurred_at < now() - make_interval(secs => $1)",
                window,
            )

    async def record_refusal(self, event: HistoryEvent) -> None:
        """A login refused by the rate limit: its event."""
        await self.append_event(event)

    async def append_event(self, event: HistoryEvent) -> None:
        async with self._pool.acquire() as connection:
            await insert_event(connection, event)
