"""The policy row (``alarm_settings``): the default interval, confirmation and PIN rules.
Read fresh by each call that needs it, because administrators change it while alarms run."""

from __future__ import annotations

import asyncpg

from fastagi.domain.policy import (
    MAX_ATTEMPTS,
    MAX_LOCKOUT_SECONDS,
    MIN_ATTEMPTS,
    NO_ANSWER_POLICIES,
    Policy,
)
from fastagi.store._common import (
    StoreError,
    check_confirmation_mode,
    check_interval,
    check_language,
    row_to,
)


class PolicyStore:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def load_settings(self) -> Policy:
        row = await self._pool.fetchrow("SELECT * FROM alarm_settings")
        assert row is not None, "002_alarms.sql inserts the one settings row"
        return row_to(Policy, row)

    async def set_default_interval(self, seconds: int) -> None:
        check_interval(seconds, "seconds")
        await self._pool.execute(
            "UPDATE alarm_settings SET default_interval_seconds = $1, updated_at = now()",
            seconds,
        )

    async def set_policy(
        self,
        *,
        no_answer_policy: str | None = None,
        confirmation_attempts: int | None = None,
        pin_attempts: int | None = None,
        lockout_seconds: int | None = None,
        confirmation_mode: str | None = None,
        default_language: str | None = None,
    ) -> Policy:
        """Change the given settings, leave the others; return them all."""
        check_confirmation_mode(confirmation_mode)
        check_language(default_language, "default_language")
        if no_answer_policy is not None and no_answer_policy not in NO_ANSWER_POLICIES:
            raise StoreError(
                f"no-answer policy must be one of {', '.join(NO_ANSWER_POLICIES)}, "
                f"not '{no_answer_policy}'",
                field="no_answer_policy",
            )
        for label, field, value in (
            ("confirmation attempts", "confirmation_attempts", confirmation_attempts),
            ("PIN attempts", "pin_attempts", pin_attempts),
        ):
            if value is not None and not MIN_ATTEMPTS <= value <= MAX_ATTEMPTS:
                raise StoreError(
                    f"{label} must be between {MIN_ATTEMPTS} and {MAX_ATTEMPTS}", field=field
                )
        if lockout_seconds is not None and not 0 <= lockout_seconds <= MAX_LOCKOUT_SECONDS:
            raise StoreError(
                f"lockout must be between 0 and {MAX_LOCKOUT_SECONDS} seconds",
                field="lockout_seconds",
            )
        row = await self._pool.fetchrow(
            """
            UPDATE alarm_settings SET
                no_answer_policy = coalesce($1, no_answer_policy),
                confirmation_attempts = coalesce($2, confirmation_attempts),
                pin_attempts = coalesce($3, pin_attempts),
                lockout_seconds = coalesce($4, lockout_seconds),
                confirmation_mode = coalesce($5, confirmation_mode),
                default_language = coalesce($6, default_language),
                updated_at = now()
            RETURNING *
            """,
            no_answer_policy,
            confirmation_attempts,
            pin_attempts,
            lockout_seconds,
            confirmation_mode,
            default_language,
        )
        assert row is not None, "002_alarms.sql inserts the one settings row"
        return row_to(Policy, row)
