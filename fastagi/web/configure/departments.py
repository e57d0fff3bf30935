"""Configuration of departments (``/config/departments``): the list, adding, editing
(name, interval, paging group) and removing one, its extension mappings, the "which
department is this extension in?" tester (a GET form, and a JSON endpoint its script
asks as you type), and the announcement's preview, rendered by the site's own TTS as an
alarm of the department would say it, served as WAV."""

from __future__ import annotations

import asyncio
import io
import re
import sys
import wave
from array import array
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import departments as admin
from fastagi.config.catalogues import load_languages
from fastagi.domain.language import Languages
from fastagi.store import StoreError
from fastagi.store.directory import DepartmentInfo
from fastagi.tts.announcement import AnnouncementMeter, sample_extension
from fastagi.web.actions import actor
from fastagi.web.configure.forms import Form, empty, optional_number, posted
from fastagi.web.keys import SETTINGS, STORES
from fastagi.web.security import require, template_context

METER = web.AppKey("announcement_meter", AnnouncementMeter)
LANGUAGES = web.AppKey("languages", Languages)

ADD_FIELDS = ("name", "interval_seconds", "paging_group")
EDIT_FIELDS = ("new_name", "interval_seconds", "paging_group", "confirmation_mode", "language")
#: What each confirmation mode does, as the form offers it (fastagi/flows/panic.py).
MODE_TEXTS = {
    "voice": "voice: names the alarm and the department aloud",
    "neutral": "neutral: a question that gives nothing away",
    "tone": "tone: a short beep, then the digit",
    "display": "display: a text on the phone, no sound",
    "none": "none: the alarm at once, no question",
}
MAP_FIELDS = ("pattern",)
LOOKUP_FIELDS = ("extension",)
DONE = {
    "added": "Department added. Map its extensions below.",
    "saved": "Department saved.",
    "unchanged": "Nothing was changed.",
    "removed": "Department removed.",
    "mapped": "Mapping added.",
    "unmapped": "Mapping removed.",
}
INTERVAL = "The interval"


def add_routes(app: web.Application) -> None:
    app.on_startup.append(_start_meter)
    app.on_cleanup.append(_close_meter)
    router = app.router
    router.add_get("/config/departments", departments_page, name="config_departments")
    router.add_post("/config/departments", add_department)
    router.add_get("/config/departments/{department_id:\\d+}", department_page)
    router.add_post("/config/departments/{department_id:\\d+}", edit_department)
    router.add_post("/config/departments/{department_id:\\d+}/remove", remove_department)
    router.add_post("/config/departments/{department_id:\\d+}/map", map_extensions)
    router.add_post("/config/departments/{department_id:\\d+}/unmap", unmap_extensions)
    router.add_get("/config/departments/{department_id:\\d+}/announcement.wav", announcement_audio)
    router.add_get("/config/lookup.json", lookup_json)


async def _start_meter(app: web.Application) -> None:
    app[METER] = AnnouncementMeter(app[SETTINGS])
    # The languages a department may speak: the catalogues the server reads.
    app[LANGUAGES] = load_languages(app[SETTINGS].flows.catalogues)


async def _close_meter(app: web.Application) -> None:
    await app[METER].close()


# -- the list -------------------------------------------------------------------------


@require("admin")
async def departments_page(request: web.Request) -> web.StreamResponse:
    return await _render_list(request, empty("add", ADD_FIELDS))


async def _render_list(request: web.Request, add: Form, *, status: int = 200) -> web.Response:
    stores = request.app[STORES]
    lookup = empty("lookup", LOOKUP_FIELDS)
    found: dict[str, Any] | None = None
    if "extension" in request.query:
        lookup.values["extension"] = request.query["extension"]
        try:
            found = await admin.lookup_extension(stores, request.query["extension"])
        except StoreError as exc:
            lookup.refuse(exc)
    return aiohttp_jinja2.render_template(
        "config_departments.html",
        request,
        template_context(
            request,
            section="departments",
            done=DONE.get(request.query.get("done", "")),
            departments=await stores.directory.list_departments(),
            group_options=await _group_options(request),
            policy=await stores.policy.load_settings(),
            add=add,
            lookup=lookup,
            found=found,
        ),
        status=status if not lookup.refused else 400,
    )


@require("admin")
async def add_department(request: web.Request) -> web.StreamResponse:
    form, texts = await posted(request, "add", ADD_FIELDS)
    try:
        interval = optional_number(texts["interval_seconds"], "interval_seconds", INTERVAL)
        department = await admin.add_department(
            request.app[STORES],
            texts["name"],
            interval_seconds=interval,
            paging_group=await _group_name(request, texts["paging_group"]),
            by=actor(request),
        )
    except StoreError as exc:
        form.refuse(exc)
        return await _render_list(request, form, status=400)
    raise web.HTTPSeeOther(f"/config/departments/{department.id}?done=added")


async def _group_options(request: web.Request) -> list[tuple[str, str]]:
    """The paging groups to choose from, by id: a name may hold a line break, which a
    browser would send back as CRLF."""
    groups = await request.app[STORES].directory.list_paging_groups()
    return [("", "none (pages nobody)")] + [
        (str(group.id), f"{group.name} ({_devices(len(group.devices))})") for group in groups
    ]


def _devices(count: int) -> str:
    return f"{count} device" if count == 1 else f"{count} devices"


async def _group_name(request: web.Request, chosen: str) -> str | None:
    """The name of the group chosen by id; None for none."""
    if not chosen.strip():
        return None
    for group in await request.app[STORES].directory.list_paging_groups():
        if str(group.id) == chosen.strip():
            return group.name
    raise StoreError("unknown paging group: choose one of the list", field="paging_group")


async def _group_id(request: web.Request, name: str | None) -> str:
    for group in await request.app[STORES].directory.list_paging_groups():
        if name is not None and group.name == name:
            return str(group.id)
    return ""


# -- one department -------------------------------------------------------------------


async def _department(request: web.Request) -> DepartmentInfo:
    wanted = int(request.match_info["department_id"])
    for department in await request.app[STORES].directory.list_departments():
        if department.id == wanted:
            return department
    raise web.HTTPNotFound(text="No such department (removed meanwhile?).")


@require("admin")
async def department_page(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    return await _render_department(request, department)


async def _render_department(
    request: web.Request,
    department: DepartmentInfo,
    *,
    edit: Form | None = None,
    mapping: Form | None = None,
    remove: Form | None = None,
    status: int = 200,
) -> web.Response:
    stores = request.app[STORES]
    if edit is None:
        edit = empty(
            "edit",
            EDIT_FIELDS,
            new_name=department.name,
            interval_seconds=""
            if department.interval_seconds is None
            else str(department.interval_seconds),
            paging_group=await _group_id(request, department.paging_group),
            confirmation_mode=department.confirmation_mode or "",
            language=department.language or "",
        )
    policy = await stores.policy.load_settings()
    interval = department.interval_seconds or policy.default_interval_seconds
    announcement = await request.app[METER].render(
        department.name, department.patterns, department.language or policy.default_language
    )
    return aiohttp_jinja2.render_template(
        "config_department.html",
        request,
        template_context(
            request,
            section="departments",
            done=DONE.get(request.query.get("done", "")),
            department=department,
            group_options=await _group_options(request),
            mode_options=[
                ("", f"the site's default ({policy.confirmation_mode})"),
                *MODE_TEXTS.items(),
            ],
            language_options=[
                ("", f"the site's default ({policy.default_language})"),
                *(
                    (code, f"{catalogue.name} ({code})")
                    for code, catalogue in sorted(request.app[LANGUAGES].catalogues.items())
                ),
            ],
            policy=policy,
            interval=interval,
            announcement=announcement,
            sample=sample_extension(department.patterns),
            lead_in=request.app[SETTINGS].alarm.lead_in,
            edit=edit,
            mapping=mapping or empty("map", MAP_FIELDS),
            remove=remove or empty("remove", ("confirm",)),
        ),
        status=status,
    )


@require("admin")
async def edit_department(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    form, texts = await posted(request, "edit", EDIT_FIELDS)
    try:
        changes = _changes(department, texts, await _group_name(request, texts["paging_group"]))
        if not changes:
            raise web.HTTPSeeOther(f"/config/departments/{department.id}?done=unchanged")
        await admin.set_department(
            request.app[STORES], department.name, **changes, by=actor(request)
        )
    except StoreError as exc:
        form.refuse(exc)
        return await _render_department(request, department, edit=form, status=400)
    raise web.HTTPSeeOther(f"/config/departments/{department.id}?done=saved")


def _changes(
    department: DepartmentInfo, texts: dict[str, str], group: str | None
) -> dict[str, Any]:
    """What the form changes: the history then records only that. A browser drops line
    breaks from a one-line field, so a name that differs from the stored one only by
    those is the stored one (rename it with the CLI to keep a line break)."""
    changes: dict[str, Any] = {}
    name = texts["new_name"].strip()
    if name not in (department.name, re.sub("[\r\n]", "", department.name)):
        changes["new_name"] = texts["new_name"]
    interval = optional_number(texts["interval_seconds"], "interval_seconds", INTERVAL)
    if interval != department.interval_seconds:
        changes["interval_seconds"] = interval
    if group != department.paging_group:
        changes["paging_group"] = group
    # Blank: the site's default. The store refuses anything not a mode or a language code.
    for field in ("confirmation_mode", "language"):
        chosen = texts[field].strip() or None
        if chosen != getattr(department, field):
            changes[field] = chosen
    return changes


@require("admin")
async def remove_department(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    form, texts = await posted(request, "remove", ("confirm",))
    if texts["confirm"] != "yes":
        form.message = "Tick the box to confirm the removal."
        return await _render_department(request, department, remove=form, status=400)
    try:
        await admin.remove_department(request.app[STORES], department.name, by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render_department(request, department, remove=form, status=400)
    raise web.HTTPSeeOther("/config/departments?done=removed")


@require("admin")
async def map_extensions(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    form, texts = await posted(request, "map", MAP_FIELDS)
    try:
        await admin.map_extensions(
            request.app[STORES], department.name, texts["pattern"], by=actor(request)
        )
    except StoreError as exc:
        form.refuse(exc)
        return await _render_department(request, department, mapping=form, status=400)
    raise web.HTTPSeeOther(f"/config/departments/{department.id}?done=mapped#mappings")


@require("admin")
async def unmap_extensions(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    form, texts = await posted(request, "map", MAP_FIELDS)
    if texts["pattern"].strip() not in department.patterns:
        form.message = f"'{texts['pattern'].strip()[:100]}' is not a mapping of this department."
        return await _render_department(request, department, mapping=form, status=400)
    try:
        await admin.unmap_extensions(request.app[STORES], texts["pattern"], by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render_department(request, department, mapping=form, status=400)
    raise web.HTTPSeeOther(f"/config/departments/{department.id}?done=unmapped#mappings")


# -- the announcement's preview and the lookup tester ----------------------------------


@require("admin")
async def announcement_audio(request: web.Request) -> web.StreamResponse:
    department = await _department(request)
    policy = await request.app[STORES].policy.load_settings()
    announcement = await request.app[METER].render(
        department.name, department.patterns, department.language or policy.default_language
    )
    if announcement is None:
        raise web.HTTPServiceUnavailable(
            text="The announcement could not be rendered (is espeak-ng installed?): an alarm"
            " of this department would page Asterisk's built-in sounds."
        )
    loop = asyncio.get_running_loop()
    audio = await loop.run_in_executor(
        None, wav_bytes, announcement.audio, announcement.sample_rate
    )
    return web.Response(body=audio, content_type="audio/wav")


def wav_bytes(raw: Path, sample_rate: int) -> bytes:
    """A signed-linear file (16-bit mono, host byte order) as a WAV file (little-endian)."""
    samples = array("h", raw.read_bytes())
    if sys.byteorder == "big":
        samples.byteswap()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


@require("admin")
async def lookup_json(request: web.Request) -> web.StreamResponse:
    try:
        found = await admin.lookup_extension(
            request.app[STORES], request.query.get("extension", "")
        )
    except StoreError as exc:
        return web.json_response({"error": str(exc)[:300], "field": exc.field}, status=400)
    return web.json_response(found)
