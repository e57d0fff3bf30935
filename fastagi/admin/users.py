"""The web console's users: who may log in, with which role, and the login itself.

Roles, each with everything of the one before: ``viewer`` (the board, alarm pages,
history), ``operator`` (+ deactivate an alarm, change an interval, re-send the
announcement), ``admin`` (+ configuration and users).

The console always keeps an admin: removing or demoting the last one is refused (the CLI
as well as the console), and an admin in the console cannot remove or demote themselves
(another admin does it), so nobody locks themselves out of the page they are using.

A refusal is a :class:`UserRefused` naming the argument it is about, so the console can
show it next to that field; its message quotes no password, and quotes a name cut short.

A login is checked against the rate limit first (failed logins per name and per client
address within ``web.login_window``, counted in PostgreSQL so every server sees them),
then the password (Argon2id, in a thread). Every attempt is in the history: ``login``,
``login_failed`` or ``login_refused`` (rate-limited: the password was not even checked).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass

from fastagi.admin.audit import record_change
from fastagi.config import WebSettings
from fastagi.domain import passwords
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.users import ROLES, LastAdminError, WebSession, WebUser

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Bytes of randomness in a session token and a CSRF token (256 bits).
TOKEN_BYTES = 32
# The rule of sql/005_web.sql's CHECK, checked first so the refusal can say which field.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# A refused name is quoted this far (a 10 kB paste quoted back helps nobody).
QUOTED_NAME_LENGTH = 40


class UserRefused(StoreError):
    """A change refused; ``field`` names the argument it is about (``name``, ``role``,
    ``password``) so a form can show the message next to that field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def may(role: str, needed: str) -> bool:
    """Whether ``role`` has the rights of ``needed`` (admin > operator > viewer)."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise UserRefused(f"unknown role {_quoted(role)}: {', '.join(ROLES)}", field="role")
    return role


def check_user_name(name: str) -> str:
    """The name without surrounding blanks, if it is 1 to 64 letters, digits or . _ @ -
    starting with a letter or digit (ASCII: it appears in logs, the history and URLs)."""
    stripped = name.strip()
    if not USER_NAME.fullmatch(stripped):
        raise UserRefused(
            f"bad user name {_quoted(stripped)}: a name is 1 to 64 letters, digits or . _ @ -,"
            " starting with a letter or digit",
            field="name",
        )
    return stripped


def _quoted(text: str) -> str:
    """``text`` quoted for a message: cut short, control characters escaped."""
    cut = text[:QUOTED_NAME_LENGTH] + ("…" if len(text) > QUOTED_NAME_LENGTH else "")
    return repr(cut)


def _is_self(name: str, acting_user: str | None) -> bool:
    return acting_user is not None and name.strip().lower() == acting_user.strip().lower()


async def _hash(password: str) -> str:
    try:
        return await passwords.hash_password_async(password)
    except ValueError as exc:
        raise UserRefused(str(exc), field="password") from None


async def add_user(stores: Stores, name: str, role: str, password: str, *, by: str) -> WebUser:
    name = check_user_name(name)
    role = check_role(role)
    password_hash = await _hash(password)
    try:
        user = await stores.users.add_user(name, role, password_hash)
    except StoreError as exc:  # the name is taken (case ignored)
        raise UserRefused(str(exc), field="name") from None
    await record_change(stores, "user add", by=by, name=user.name, role=user.role)
    return user


async def remove_user(
    stores: Stores, name: str, *, by: str, acting_user: str | None = None
) -> WebUser:
    """Remove the user; its sessions end at once. Refused for the last admin, and for
    ``acting_user`` themselves (the console's user who asks; None: the CLI)."""
    if _is_self(name, acting_user):
        raise UserRefused(
            "you cannot remove yourself: another admin can, if it must be done", field="name"
        )
    try:
        user = await stores.users.remove_user(name.strip())
    except LastAdminError as exc:
        raise UserRefused(
            f"{exc}: removing them would leave nobody to manage the console; make another"
            " user admin first",
            field="name",
        ) from None
    await record_change(stores, "user remove", by=by, name=user.name)
    return user


async def set_password(stores: Stores, name: str, password: str, *, by: str) -> WebUser:
    """Change the password; every session of the user ends (log in again)."""
    user = await stores.users.set_password(name.strip(), await _hash(password))
    await record_change(stores, "user passwd", by=by, name=user.name)
    return user


async def set_role(
    stores: Stores, name: str, role: str, *, by: str, acting_user: str | None = None
) -> WebUser:
    """Change the role; it applies to the user's open sessions at their next request.
    Demoting the last admin is refused, and so is ``acting_user`` (the console's user
    who asks; None: the CLI) taking away their own admin role."""
    role = check_role(role)
    if role != "admin" and _is_self(name, acting_user):
        raise UserRefused(
            "you cannot take away your own admin role: another admin can, if it must be done",
            field="role",
        )
    try:
        user = await stores.users.set_role(name.strip(), role)
    except LastAdminError as exc:
        raise UserRefused(
            f"{exc}: demoting them would leave nobody to manage the console; make another"
            " user admin first",
            field="role",
        ) from None
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
