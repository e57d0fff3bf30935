"""Who is asking, and what they may do: the session cookie, the CSRF token every POST
carries, the role each handler needs, and the headers every response gets.

- The session token is random (256 bits), in an ``HttpOnly; SameSite=Strict`` cookie,
  ``Secure`` when the console is reached over TLS (directly, or through a proxy whose
  ``X-Forwarded-Proto`` is trusted); PostgreSQL keeps only its hash (fastagi/store/users.py).
  Every request reads the session and the user's role afresh: a removed user or a
  changed role applies at once, on every server.
- Every POST carries the session's synchronizer token (``csrf_token``); the login form,
  which has no session yet, a token that must match a cookie set with the form.
- Content-Security-Policy without inline script or style, no framing, no caching of
  pages (an operator's screen may be a shared one).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from fastagi.admin.users import may
from fastagi.config import WebSettings
from fastagi.store.users import WebSession
from fastagi.web.keys import SETTINGS, STORES

SESSION_COOKIE = "fastagi_session"
LOGIN_COOKIE = "fastagi_login"
CSRF_FIELD = "csrf_token"
SESSION = web.RequestKey("session", WebSession)

# Reachable without a session (/metrics: only from [metrics] allowed_networks).
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/metrics"})
STATIC_PREFIX = "/static/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self'",  # the announcement's preview (configuration)
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_address(request: web.Request, settings: WebSettings) -> str:
    """The client's address: the proxy's X-Forwarded-For (its last entry, the one the
    proxy itself added) when trusted, else the peer's."""
    if settings.trust_proxy_headers:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:100]
    return request.remote or "unknown"


def is_https(request: web.Request, settings: WebSettings) -> bool:
    if request.secure:
        return True
    if settings.trust_proxy_headers:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: float | None,
    path: str = "/",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=None if max_age is None else int(max_age),
        path=path,
        httponly=True,
        samesite="Strict",
        secure=is_https(request, request.app[SETTINGS].web),
    )


def local_path(value: object) -> str:
    """``value`` if it is a path of this console (where to go after a login or a form),
    else ``/``: never another site (``//host``, ``/\\host``) nor a header break."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and not any(char in value for char in "\\\r\n")
    ):
        return value
    return "/"


def same_token(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def new_token() -> str:
    return secrets.token_urlsafe(32)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _headers(request, response)
        raise
    _headers(request, response)
    return response


def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:
        return  # a stream (the board's events) sets its own before it starts
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(STATIC_PREFIX):
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the request's session; without one, a page redirects to the login and
    anything else is refused. POSTs must carry the session's CSRF token."""
    path = request.path
    if path.startswith(STATIC_PREFIX) or path in PUBLIC_PATHS:
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await request.app[STORES].users.session(token) if token else None
    if session is None:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={_quote(request.path_qs)}")
        raise web.HTTPUnauthorized(text="Log in first.")
    request[SESSION] = session
    if request.method not in {"GET", "HEAD"}:
        form = await posted_form(request)
        if not same_token(form.get(CSRF_FIELD), session.csrf_token):
            raise web.HTTPForbidden(
                text="This form has expired or did not come from this console: reload the"
                " page and try again."
            )
    return await handler(request)


async def posted_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The request's form, or 400 when its bytes are not UTF-8 (a 500 otherwise).

    aiohttp caches the parsed form, so a handler's own ``request.post()`` after this one
    reads no byte again."""
    try:
        return await request.post()
    except ValueError:  # UnicodeDecodeError: bytes that are not UTF-8
        raise web.HTTPBadRequest(text="This form's data is not UTF-8 text.") from None


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def require(role: str) -> Callable[[Handler], Handler]:
    """The handler needs at least ``role`` (viewer < operator < admin): 403 otherwise."""

    def decorate(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            if not may(request[SESSION].role, role):
                raise web.HTTPForbidden(text=f"This needs the {role} role.")
            return await handler(request)

        checked.__name__ = handler.__name__
        checked.__doc__ = handler.__doc__
        return checked

    return decorate


def template_context(request: web.Request, **values: Any) -> dict[str, Any]:
    """What every page's template gets: the user, what its role allows, the CSRF token."""
    session = request.get(SESSION)
    return {
        "session": session,
        "csrf_token": session.csrf_token if session else "",
        "can_operate": session is not None and may(session.role, "operator"),
        "can_administer": session is not None and may(session.role, "admin"),
        **values,
    }
