"""Configuration of deactivators (``/config/deactivators``): who may stop an alarm with a
PIN. A PIN is typed twice, hashed by fastagi/admin (in an executor) and never shown,
never sent back into a form, never recorded: a refused form comes back without it."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import deactivators as admin
from fastagi.store import StoreError
from fastagi.web.actions import actor
from fastagi.web.configure.forms import Form, empty, posted
from fastagi.web.keys import STORES
from fastagi.web.security import require, template_context

ADD_FIELDS = ("extension",)
PIN_FIELDS = ("pin", "pin_again")
DONE = {
    "added": "Deactivator added.",
    "changed": "PIN changed; any lockout of that extension ended.",
    "removed": "Deactivator removed.",
    "unlocked": "Lockout ended: the extension may try its PIN again.",
}


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/config/deactivators", deactivators_page, name="config_deactivators")
    router.add_post("/config/deactivators", add_deactivator)
    router.add_post("/config/deactivators/{extension:\\d{1,20}}/pin", change_pin)
    router.add_post("/config/deactivators/{extension:\\d{1,20}}/remove", remove_deactivator)
    router.add_post("/config/deactivators/{extension:\\d{1,20}}/unlock", unlock_deactivator)


@require("admin")
async def deactivators_page(request: web.Request) -> web.StreamResponse:
    return await _render(request)


async def _render(
    request: web.Request,
    *,
    add: Form | None = None,
    extension: str | None = None,
    row_form: Form | None = None,
    status: int = 200,
) -> web.Response:
    deactivators = await request.app[STORES].deactivators.list_deactivators()
    forms = {d.extension: empty(f"pin-{d.extension}", PIN_FIELDS) for d in deactivators}
    if extension is not None and row_form is not None:
        forms[extension] = row_form
    return aiohttp_jinja2.render_template(
        "config_deactivators.html",
        request,
        template_context(
            request,
            section="deactivators",
            done=DONE.get(request.query.get("done", "")),
            deactivators=deactivators,
            add=add or empty("add", (*ADD_FIELDS, *PIN_FIELDS)),
            row_forms=forms,
        ),
        status=status,
    )


def _same_pins(texts: dict[str, str]) -> str:
    """The PIN typed twice alike (the CLI asks twice too)."""
    if texts["pin"] != texts["pin_again"]:
        raise StoreError("the PINs differ: type the same PIN twice", field="pin_again")
    return texts["pin"]


@require("admin")
async def add_deactivator(request: web.Request) -> web.StreamResponse:
    form, texts = await posted(request, "add", ADD_FIELDS, secret=PIN_FIELDS)
    try:
        created = await admin.set_deactivator(
            request.app[STORES], texts["extension"], _same_pins(texts), by=actor(request)
        )
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, add=form, status=400)
    done = "added" if created else "changed"
    raise web.HTTPSeeOther(f"/config/deactivators?done={done}")


@require("admin")
async def change_pin(request: web.Request) -> web.StreamResponse:
    extension = request.match_info["extension"]
    form, texts = await posted(request, f"pin-{extension}", (), secret=PIN_FIELDS)
    known = {d.extension for d in await request.app[STORES].deactivators.list_deactivators()}
    if extension not in known:  # a PIN change never adds one (the add form does)
        raise web.HTTPNotFound(text=f"Extension {extension} is not a deactivator (removed?).")
    try:
        await admin.set_deactivator(
            request.app[STORES], extension, _same_pins(texts), by=actor(request)
        )
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, extension=extension, row_form=form, status=400)
    raise web.HTTPSeeOther("/config/deactivators?done=changed")


@require("admin")
async def remove_deactivator(request: web.Request) -> web.StreamResponse:
    extension = request.match_info["extension"]
    try:
        await admin.remove_deactivator(request.app[STORES], extension, by=actor(request))
    except StoreError as exc:  # not one (any more)
        raise web.HTTPNotFound(text=str(exc)) from None
    raise web.HTTPSeeOther("/config/deactivators?done=removed")


@require("admin")
async def unlock_deactivator(request: web.Request) -> web.StreamResponse:
    extension = request.match_info["extension"]
    await admin.unlock_deactivator(request.app[STORES], extension, by=actor(request))
    raise web.HTTPSeeOther("/config/deactivators?done=unlocked")
