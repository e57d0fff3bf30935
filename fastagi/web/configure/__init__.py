"""The console's configuration pages (``/config/...``, the admin role): departments and
their extensions, paging groups, deactivators, the policy, and what the settings file
holds. Every change goes through the fastagi/admin function the CLI calls, which checks
it with the CLI's rules, records it in the history as ``web:<user>`` and tells every
server at once (``NOTIFY fastagi_config``)."""

from __future__ import annotations

from aiohttp import web

from fastagi.web.configure import deactivators, departments, paging, policy
from fastagi.web.security import require


def add_routes(app: web.Application) -> None:
    app.router.add_get("/config", configuration, name="config")
    departments.add_routes(app)
    paging.add_routes(app)
    deactivators.add_routes(app)
    policy.add_routes(app)


@require("admin")
async def configuration(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/config/departments")
