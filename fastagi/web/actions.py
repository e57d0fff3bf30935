"""What an operator does from the console, each through the one function of
fastagi/admin that the CLI uses too, recorded with the user's name (``web:NAME``)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import alarms as admin_alarms
from fastagi.admin import departments as admin_departments
from fastagi.store import StoreError
from fastagi.web.keys import STORES
from fastagi.web.security import SESSION, local_path, require, template_context


def actor(request: web.Request) -> str:
    """Who acts, as the history records it."""
    return f"web:{request[SESSION].user_name}"


def _refused(request: web.Request, message: str, back: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "message.html",
        request,
        template_context(request, title="Not done", message=message, back=back),
        status=409,
    )


@require("operator")
async def deactivate(request: web.Request) -> web.StreamResponse:
    alarm_id = int(request.match_info["alarm_id"])
    form = await request.post()
    back = local_path(form.get("back"))
    try:
        await admin_alarms.deactivate_alarm(
            request.app[STORES],
            alarm_id,
            reason=str(form.get("reason", "")),
            by=actor(request),
            source="web",
        )
    except StoreError as exc:
        return _refused(request, str(exc), back)
    raise web.HTTPSeeOther(back)


@require("operator")
async def page_now(request: web.Request) -> web.StreamResponse:
    alarm_id = int(request.match_info["alarm_id"])
    form = await request.post()
    back = local_path(form.get("back"))
    try:
        await admin_alarms.request_page(request.app[STORES], alarm_id, by=actor(request))
    except StoreError as exc:
        return _refused(request, str(exc), back)
    raise web.HTTPSeeOther(back)


@require("operator")
async def set_interval(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    back = local_path(form.get("back"))
    department = str(form.get("department", ""))
    try:
        seconds = int(str(form.get("interval_seconds", "")).strip())
    except ValueError:
        return _refused(request, "The interval must be a whole number of seconds.", back)
    try:
        await admin_departments.set_department(
            request.app[STORES], department, interval_seconds=seconds, by=actor(request)
        )
    except StoreError as exc:
        return _refused(request, str(exc), back)
    raise web.HTTPSeeOther(back)
