"""Logging in and out (fastagi/admin/users.py decides; this is the form)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import users
from fastagi.web.keys import SETTINGS, STORES
from fastagi.web.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    client_address,
    local_path,
    new_token,
    posted_form,
    same_token,
    set_cookie,
    template_context,
)

# The login form's token lives as long as a person may take to type a password.
LOGIN_FORM_SECONDS = 3600
MIN_TOKEN_LENGTH = 32


def _login_page(
    request: web.Request, *, status: int = 200, message: str | None = None, name: str = ""
) -> web.Response:
    # The same token for every form of this browser (a second tab, a stray request of
    # the login page) until it logs in: a fresh one each time would void the first form.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) < MIN_TOKEN_LENGTH:
        token = new_token()
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        template_context(
            request,
            login_token=token,
            message=message,
            name=name,
            next=local_path(request.query.get("next")),
        ),
        status=status,
    )
    set_cookie(response, request, LOGIN_COOKIE, token, max_age=LOGIN_FORM_SECONDS, path="/login")
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token and await request.app[STORES].users.session(token):
        raise web.HTTPSeeOther(local_path(request.query.get("next")))
    return _login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    form = await posted_form(request)
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not same_token(form.get("login_token"), cookie):
        raise web.HTTPForbidden(
            text="This login form has expired or did not come from this console: reload it."
        )
    settings = request.app[SETTINGS].web
    name = str(form.get("name", ""))[:200]
    try:
        done = await users.authenticate(
            request.app[STORES],
            name,
            str(form.get("password", "")),
            address=client_address(request, settings),
            settings=settings,
        )
    except users.LoginRateLimited as exc:
        response = _login_page(request, status=429, message=str(exc), name=name)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except users.LoginFailed as exc:
        return _login_page(request, status=401, message=str(exc), name=name)
    redirect = web.HTTPSeeOther(local_path(form.get("next")))
    set_cookie(redirect, request, SESSION_COOKIE, done.token, max_age=settings.session_lifetime)
    redirect.del_cookie(LOGIN_COOKIE, path="/login")
    raise redirect


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE, "")
    settings = request.app[SETTINGS].web
    await users.logout(request.app[STORES], token, address=client_address(request, settings))
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect
