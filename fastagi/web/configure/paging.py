"""Configuration of paging groups and their devices (``/config/paging``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import paging as admin
from fastagi.store import StoreError, Stores
from fastagi.store.directory import PagingGroup
from fastagi.web.actions import actor
from fastagi.web.configure.forms import Form, empty, posted
from fastagi.web.keys import STORES
from fastagi.web.security import require, template_context


class DeviceChange(Protocol):
    """fastagi.admin.paging's add_paging_device and remove_paging_device."""

    def __call__(self, stores: Stores, group: str, device: str, *, by: str) -> Awaitable[None]: ...


GROUP_FIELDS = ("name",)
DEVICE_FIELDS = ("device",)
DONE = {
    "added": "Paging group added.",
    "removed": "Paging group removed; its departments page nobody until they get another.",
    "device-added": "Device added.",
    "device-removed": "Device removed.",
}


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/config/paging", paging_page, name="config_paging")
    router.add_post("/config/paging", add_group)
    router.add_post("/config/paging/{group_id:\\d+}/remove", remove_group)
    router.add_post("/config/paging/{group_id:\\d+}/devices", add_device)
    router.add_post("/config/paging/{group_id:\\d+}/devices/remove", remove_device)


@require("admin")
async def paging_page(request: web.Request) -> web.StreamResponse:
    return await _render(request)


async def _render(
    request: web.Request,
    *,
    add: Form | None = None,
    group_id: int | None = None,
    group_form: Form | None = None,
    status: int = 200,
) -> web.Response:
    """The page; ``group_form`` (a device form or a removal) is shown for ``group_id``."""
    stores = request.app[STORES]
    groups = await stores.directory.list_paging_groups()
    departments = await stores.directory.list_departments()
    forms = {group.id: empty(f"group-{group.id}", DEVICE_FIELDS) for group in groups}
    if group_id is not None and group_form is not None:
        forms[group_id] = group_form
    return aiohttp_jinja2.render_template(
        "config_paging.html",
        request,
        template_context(
            request,
            section="paging",
            done=DONE.get(request.query.get("done", "")),
            groups=groups,
            used_by={
                group.name: [d.name for d in departments if d.paging_group == group.name]
                for group in groups
            },
            add=add or empty("add", GROUP_FIELDS),
            group_forms=forms,
        ),
        status=status,
    )


async def _group(request: web.Request) -> PagingGroup:
    wanted = int(request.match_info["group_id"])
    for group in await request.app[STORES].directory.list_paging_groups():
        if group.id == wanted:
            return group
    raise web.HTTPNotFound(text="No such paging group (removed meanwhile?).")


@require("admin")
async def add_group(request: web.Request) -> web.StreamResponse:
    form, texts = await posted(request, "add", GROUP_FIELDS)
    try:
        group = await admin.add_paging_group(request.app[STORES], texts["name"], by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, add=form, status=400)
    raise web.HTTPSeeOther(f"/config/paging?done=added#group-{group.id}")


@require("admin")
async def remove_group(request: web.Request) -> web.StreamResponse:
    group = await _group(request)
    form = empty(f"group-{group.id}", DEVICE_FIELDS)
    _, texts = await posted(request, "remove", ("confirm",))
    try:
        if texts["confirm"] != "yes":
            raise StoreError("tick the box to confirm the removal")
        await admin.remove_paging_group(request.app[STORES], group.name, by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, group_id=group.id, group_form=form, status=400)
    raise web.HTTPSeeOther("/config/paging?done=removed")


@require("admin")
async def add_device(request: web.Request) -> web.StreamResponse:
    return await _change_device(request, admin.add_paging_device, done="device-added")


@require("admin")
async def remove_device(request: web.Request) -> web.StreamResponse:
    return await _change_device(request, admin.remove_paging_device, done="device-removed")


async def _change_device(
    request: web.Request, change: DeviceChange, *, done: str
) -> web.StreamResponse:
    """Add or remove the posted device of the group in the path; the group's form again,
    with the refusal, when the change is refused."""
    group = await _group(request)
    form, texts = await posted(request, f"group-{group.id}", DEVICE_FIELDS)
    try:
        await change(request.app[STORES], group.name, texts["device"], by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, group_id=group.id, group_form=form, status=400)
    raise web.HTTPSeeOther(f"/config/paging?done={done}#group-{group.id}")
