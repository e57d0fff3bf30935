"""The default interval and the confirmation and PIN policy."""

from __future__ import annotations

from fastagi.admin.audit import record_change
from fastagi.domain.policy import Policy
from fastagi.store import StoreError, Stores


async def set_default_interval(stores: Stores, seconds: int, *, by: str) -> None:
    await stores.policy.set_default_interval(seconds)
    await record_change(stores, "interval set", by=by, seconds=seconds)


async def set_policy(
    stores: Stores,
    *,
    no_answer_policy: str | None = None,
    confirmation_attempts: int | None = None,
    pin_attempts: int | None = None,
    lockout_seconds: int | None = None,
    confirmation_mode: str | None = None,
    default_language: str | None = None,
    by: str,
) -> Policy:
    """Change the given settings, leave the others; return them all."""
    given = {
        "no-answer": no_answer_policy,
        "confirmation-attempts": confirmation_attempts,
        "pin-attempts": pin_attempts,
        "lockout-seconds": lockout_seconds,
        "confirmation-mode": confirmation_mode,
        "language": default_language,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if not changes:
        raise StoreError(
            "nothing to change: give --no-answer, --confirmation-attempts, --pin-attempts, "
            "--lockout-seconds, --confirmation-mode or --language"
        )
    policy = await stores.policy.set_policy(
        no_answer_policy=no_answer_policy,
        confirmation_attempts=confirmation_attempts,
        pin_attempts=pin_attempts,
        lockout_seconds=lockout_seconds,
        confirmation_mode=confirmation_mode,
        default_language=default_language,
    )
    # As "name=value" strings: a details key may not contain "pin".
    await record_change(
        stores, "policy set", by=by, changes=[f"{k}={v}" for k, v in changes.items()]
    )
    return policy
