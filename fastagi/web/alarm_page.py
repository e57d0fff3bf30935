"""One alarm's page (``/alarms/<id>``): its whole timeline from the history, and a chart
of its page cycles."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fastagi.web import timeline
from fastagi.web.keys import FEED, STORES
from fastagi.web.security import template_context


@aiohttp_jinja2.template("alarm.html")
async def alarm_page(request: web.Request) -> dict[str, Any]:
    alarm_id = int(request.match_info["alarm_id"])
    stores = request.app[STORES]
    alarm = await stores.alarms.get_alarm(alarm_id)
    if alarm is None:
        raise web.HTTPNotFound(text=f"No alarm {alarm_id}.")
    events = await stores.history.timeline(alarm_id)
    board = await request.app[FEED].board()
    live = next((a for a in board.alarms if a.id == alarm_id), None)
    end = alarm.deactivated_at or board.now
    return template_context(
        request,
        alarm=alarm,
        entries=timeline.entries(events),
        chart=timeline.cycle_chart(events, alarm.activated_at, end),
        live=live,
        board=board,
        now=board.now,
    )
