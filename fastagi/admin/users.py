"""The web console's users: who may log in, with which role, and the login itself.

Roles, each with everything of the one before: ``viewer`` (the board, alarm pages,
history), ``operator`` (+ deactivate an alarm, change an interval, re-send the
announcement), ``admin`` (+ configuration and users).

A login is checked against the rate limit first (failed logins per name and per client
address within ``web.login_window``, counted in PostgreSQL so every server sees them),
then the password (Argon2id, in a thread). Every attempt is in the history: ``login``,
``login_failed`` or ``login_refused`` (rate-limited: the password was not even checked).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from fastagi.admin.audit import record_change
from fastagi.config import WebSettings
from fastagi.domain import passwords
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.users import ROLES, WebSession, WebUser

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Bytes of randomness in a session token and a CSRF token (256 bits).
TOKEN_BYTES = 32


def may(role: str, needed: str) -> bool:
    """Whether ``role`` has the rights of ``needed`` (admin > operator > viewer)."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise StoreError(f"unknown role '{role}': {', '.join(ROLES)}")
    return role


async def _hash(password: str) -> str:
    try:
        return await passwords.hash_password_async(password)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


async def add_user(stores: Stores, name: str, role: str, password: str, *, by: str) -> WebUser:
    user = await stores.users.add_user(name.strip(), check_role(role), await _hash(password))
    await record_change(stores, "user add", by=by, name=user.name, role=user.role)
    return user


async def remove_user(stores: Stores, name: str, *, by: str) -> WebUser:
    """Remove the user; its sessions end at once."""
    user = await stores.users.remove_user(name.strip())
    await record_change(stores, "user remove", by=by, name=user.name)
    return user


async def set_password(stores: Stores, name: str, password: str, *, by: str) -> WebUser:
    """Change the password; every session of the user ends (log in again)."""
    user = await stores.users.set_password(name.strip(), await _hash(password))
    await record_change(stores, "user passwd", by=by, name=user.name)
    return user


async def set_role(stores: Stores, name: str, role: str, *, by: str) -> WebUser:
    """Change the role; it applies to the user's open sessions at their next request."""
    user = await stores.users.set_role(name.strip(), check_role(role))
    await record_change(stores, "user role", by=by, name=user.name, role=user.role)
    return user


async def list_users(stores: Stores) -> list[WebUser]:
    return await stores.users.list_users()


@dataclass(frozen=True)
class Login:
    """A session opened: the token for the cookie, and the session it names."""

    token: str
    session: WebSession


class LoginFailed(Exception):
    """Wrong name or password; the message is for the person logging in (it does not say
    which of the two was wrong)."""


class LoginRateLimited(LoginFailed):
    """Too many failed logins for this name or address; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _login_event(kind: EventKind, name: str, address: str, **details: object) -> HistoryEvent:
    return HistoryEvent(
        kind=kind,
        alarm_id=None,
        extension=None,
        department=None,
        details={"user": name[:200], "address": address, **details},
    )


async def authenticate(
    stores: Stores, name: str, password: str, *, address: str, settings: WebSettings
) -> Login:
    """Open a session for ``name`` if its password is right and the rate limit allows;
    raises :class:`LoginRateLimited` or :class:`LoginFailed` otherwise."""
    name = name.strip()
    by_name, by_address = await stores.users.recent_failures(name, address, settings.login_window)
    if by_name >= settings.login_failures_per_name or (
        by_address >= settings.login_failures_per_address
    ):
        which = "this user name" if by_name >= settings.login_failures_per_name else "this address"
        await stores.users.record_refusal(
            _login_event(EventKind.LOGIN_REFUSED, name, address, limited=which)
        )
        minutes = max(1, math.ceil(settings.login_window / 60))
        raise LoginRateLimited(
            f"Too many failed logins for {which}. Wait up to {minutes} minutes, then try"
            " again, or ask an administrator.",
            retry_after=math.ceil(settings.login_window),
        )
    found = await stores.users.credentials(name) if name else None
    stored = found[1] if found else None
    if not await passwords.verify_password_async(password, stored) or found is None:
        reason = "wrong password" if found else "unknown user"
        await stores.users.record_failure(
            name,
            address,
            _login_event(EventKind.LOGIN_FAILED, name, address, reason=reason),
            settings.login_window,
        )
        raise LoginFailed("Wrong user name or password.")
    user, stored_hash = found
    if passwords.needs_rehash(stored_hash):
        await stores.users.rehash_password(
            user.id, stored_hash, await passwords.hash_password_async(password)
        )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    csrf = secrets.token_urlsafe(TOKEN_BYTES)
    await stores.users.open_session(
        token,
        user_id=user.id,
        csrf_token=csrf,
        lifetime=settings.session_lifetime,
        address=address,
        event=_login_event(EventKind.LOGIN, user.name, address, role=user.role),
    )
    session = await stores.users.session(token)
    if session is None:  # removed in the instant between
        raise LoginFailed("Wrong user name or password.")
    return Login(token, session)


async def logout(stores: Stores, token: str, *, address: str) -> None:
    session = await stores.users.session(token)
    event = (
        None
        if session is None
        else _login_event(EventKind.LOGOUT, session.user_name, address, role=session.role)
    )
    await stores.users.close_session(token, event)
