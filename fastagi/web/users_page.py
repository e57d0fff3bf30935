"""The console's users page (``/users``, admins only): who may log in, and with which role.

Every change goes through fastagi/admin/users.py, as ``fastagi user ...`` does, recorded
as ``web:<admin>``; the admin's own name goes along as ``acting_user``, so nobody removes
or demotes themselves out of this page. A refused form comes back with the message next
to its field and what was typed, except passwords: those are never sent back to the
browser. Removing a user is confirmed on a page of its own (no script needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import users as admin
from fastagi.store import StoreError
from fastagi.store.users import ROLES, WebUser
from fastagi.web.actions import actor
from fastagi.web.keys import STORES
from fastagi.web.security import SESSION, require, template_context

# A user's name in a path: the rule of admin.USER_NAME (anything else is no user: 404).
NAME_IN_PATH = "{name:[A-Za-z0-9][A-Za-z0-9._@-]{0,63}}"
PASSWORD_FIELDS = ("password", "password_again")
DONE = {
    "added": "User added.",
    "role": "Role changed; it applies to their next page.",
    "password": "Password set; their open sessions have ended.",
    "removed": "User removed; their open sessions have ended.",
}
ROLE_HINTS = {
    "viewer": "viewer: the board, alarm pages and history",
    "operator": "operator: + deactivate an alarm, change an interval, re-send the announcement",
    "admin": "admin: + configuration and users",
}
# A refusal's message is shown whole up to this (it may quote a long paste).
MAX_SHOWN = 300


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/users", users_page, name="users")
    router.add_post("/users", add_user)
    router.add_post(f"/users/{NAME_IN_PATH}/role", change_role)
    router.add_post(f"/users/{NAME_IN_PATH}/password", change_password)
    router.add_get(f"/users/{NAME_IN_PATH}/remove", confirm_removal)
    router.add_post(f"/users/{NAME_IN_PATH}/remove", remove_user)


@dataclass
class Form:
    """One form of the page: ``prefix`` makes its element ids (``add-name``); ``values``
    what was typed (never a password); ``errors`` a refusal's message by field;
    ``message`` a refusal about none of its fields."""

    prefix: str
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None

    def id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def refuse(self, exc: StoreError, fields: tuple[str, ...]) -> None:
        text = str(exc)
        text = text[:MAX_SHOWN] + "…" if len(text) > MAX_SHOWN else text
        where = exc.field if isinstance(exc, admin.UserRefused) else None
        if where in fields:
            self.errors[where] = text
        else:
            self.message = text

    def focus(self) -> str | None:
        """The id of the first field refused, for the page to put the cursor there."""
        return next((self.id(name) for name in self.errors), None)


@dataclass(frozen=True)
class UserRow:
    user: WebUser
    last_login: datetime | None
    is_self: bool
    role_form: Form
    password_form: Form


async def _posted(request: web.Request) -> dict[str, str]:
    data = await request.post()
    # A file where a text was expected is no text.
    return {key: value for key, value in data.items() if isinstance(value, str)}


def _password_twice(texts: dict[str, str]) -> str:
    """The password typed twice alike (the CLI asks twice on a terminal too)."""
    password = texts.get("password", "")
    if password != texts.get("password_again", ""):
        raise admin.UserRefused(
            "the passwords differ: type the same password twice", field="password_again"
        )
    return password


def _me(request: web.Request) -> str:
    return request[SESSION].user_name


async def _render(
    request: web.Request,
    *,
    add: Form | None = None,
    refused: tuple[str, Form] | None = None,
    status: int = 200,
) -> web.Response:
    """The page; ``refused`` is (user name, form) of a row's form sent back refused."""
    stores = request.app[STORES]
    users = await admin.list_users(stores)
    last_logins = await stores.users.last_logins()
    me = _me(request).lower()
    rows = []
    for user in users:
        key = user.name.lower()
        role_form = Form(f"role-{user.name}", {"role": user.role})
        password_form = Form(f"password-{user.name}")
        if refused is not None and refused[0].lower() == key:
            form = refused[1]
            if form.prefix.startswith("role-"):
                role_form = form
                if key == me:  # their own card has no role field to show it by
                    form.message = form.message or next(iter(form.errors.values()), None)
            else:
                password_form = form
        rows.append(UserRow(user, last_logins.get(user.id), key == me, role_form, password_form))
    add = add or Form("add", {"role": "viewer"})
    forms = [add, *(f for row in rows for f in (row.role_form, row.password_form))]
    return aiohttp_jinja2.render_template(
        "users.html",
        request,
        template_context(
            request,
            rows=rows,
            add=add,
            roles=ROLES,
            role_hints=ROLE_HINTS,
            done=DONE.get(request.query.get("done", "")),
            focus=next((f.focus() for f in forms if f.focus()), None),
        ),
        status=status,
    )


@require("admin")
async def users_page(request: web.Request) -> web.StreamResponse:
    return await _render(request)


@require("admin")
async def add_user(request: web.Request) -> web.StreamResponse:
    texts = await _posted(request)
    form = Form("add", {key: texts.get(key, "") for key in ("name", "role")})
    try:
        await admin.add_user(
            request.app[STORES],
            texts.get("name", ""),
            texts.get("role", ""),
            _password_twice(texts),
            by=actor(request),
        )
    except StoreError as exc:
        form.refuse(exc, ("name", "role", *PASSWORD_FIELDS))
        return await _render(request, add=form, status=400)
    raise web.HTTPSeeOther("/users?done=added")


@require("admin")
async def change_role(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    texts = await _posted(request)
    form = Form(f"role-{name}", {"role": texts.get("role", "")})
    try:
        await admin.set_role(
            request.app[STORES],
            name,
            texts.get("role", ""),
            by=actor(request),
            acting_user=_me(request),
        )
    except admin.UserRefused as exc:
        form.refuse(exc, ("role",))
        return await _render(request, refused=(name, form), status=400)
    except StoreError as exc:  # no such user (any more)
        raise web.HTTPNotFound(text=str(exc)) from None
    raise web.HTTPSeeOther("/users?done=role")


@require("admin")
async def change_password(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    texts = await _posted(request)
    form = Form(f"password-{name}")
    try:
        await admin.set_password(
            request.app[STORES], name, _password_twice(texts), by=actor(request)
        )
    except admin.UserRefused as exc:
        form.refuse(exc, PASSWORD_FIELDS)
        return await _render(request, refused=(name, form), status=400)
    except StoreError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    # Their own password: this session has ended too, and the next page is the login.
    raise web.HTTPSeeOther("/users?done=password")


async def _removal_page(
    request: web.Request, user: WebUser, *, message: str | None = None, status: int = 200
) -> web.Response:
    return aiohttp_jinja2.render_template(
        "users_remove.html",
        request,
        template_context(
            request, user=user, message=message, is_self=user.name.lower() == _me(request).lower()
        ),
        status=status,
    )


async def _user_named(request: web.Request) -> WebUser:
    name = request.match_info["name"].lower()
    found = [u for u in await admin.list_users(request.app[STORES]) if u.name.lower() == name]
    if not found:
        raise web.HTTPNotFound(text=f"No user {request.match_info['name']} (removed?).")
    return found[0]


@require("admin")
async def confirm_removal(request: web.Request) -> web.StreamResponse:
    return await _removal_page(request, await _user_named(request))


@require("admin")
async def remove_user(request: web.Request) -> web.StreamResponse:
    user = await _user_named(request)
    try:
        await admin.remove_user(
            request.app[STORES], user.name, by=actor(request), acting_user=_me(request)
        )
    except admin.UserRefused as exc:
        return await _removal_page(request, user, message=str(exc), status=400)
    except StoreError as exc:  # removed meanwhile
        raise web.HTTPNotFound(text=str(exc)) from None
    raise web.HTTPSeeOther("/users?done=removed")
