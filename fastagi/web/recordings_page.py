"""The console's recorded locations (``/recordings``, admins only): who recorded where
they are (*557), how long, and a delete button each. Deleting goes through
fastagi/admin/recordings.py, as ``fastagi recording delete`` does, recorded as
``web:<admin>``; the next page of that extension speaks its department and extension
again."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import recordings as admin
from fastagi.store import StoreError
from fastagi.web.actions import actor
from fastagi.web.keys import SETTINGS, STORES
from fastagi.web.security import require, template_context

DONE = {"deleted": "Recording deleted; pages speak the department and extension again."}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/recordings", recordings_page, name="recordings")
    app.router.add_post("/recordings/delete", delete_recording)


async def _render(
    request: web.Request, *, message: str | None = None, status: int = 200
) -> web.Response:
    locations = await request.app[STORES].recordings.list()
    return aiohttp_jinja2.render_template(
        "recordings.html",
        request,
        template_context(
            request,
            locations=locations,
            message=message,
            done=DONE.get(request.query.get("done", "")),
        ),
        status=status,
    )


@require("admin")
async def recordings_page(request: web.Request) -> web.StreamResponse:
    return await _render(request)


@require("admin")
async def delete_recording(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    extension = form.get("extension")
    department = form.get("department")
    try:
        await admin.delete_recording(
            request.app[STORES],
            request.app[SETTINGS].recording,
            by=actor(request),
            extension=extension if isinstance(extension, str) and extension else None,
            department=department if isinstance(department, str) and department else None,
        )
    except StoreError as exc:
        return await _render(request, message=str(exc)[:300], status=400)
    raise web.HTTPSeeOther("/recordings?done=deleted")
