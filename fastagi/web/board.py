"""The live board (``/``) and its stream of updates (``/events``, Server-Sent Events).

The page is complete without JavaScript (server-rendered, refreshed by a ``<noscript>``
meta refresh); the script (static/board.js) only applies the stream's updates. Each
update carries, per alarm, the server-rendered HTML of its card, rendered for the
stream's own user (an operator's card has its action forms), so the page and the stream
never disagree.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fastagi.web.feed import Snapshot
from fastagi.web.keys import FEED, STORES
from fastagi.web.security import SECURITY_HEADERS, SESSION, SESSION_COOKIE, template_context

# A ping this often: the script treats a stream silent for three of them as lost (a
# stalled connection gives the browser no error of its own), and the session is checked.
PING_SECONDS = 10.0
# What EventSource waits before reconnecting (its default is about 3 s).
RECONNECT_MS = 1000


@aiohttp_jinja2.template("board.html")
async def board_page(request: web.Request) -> dict[str, Any]:
    board = await request.app[FEED].board()
    return template_context(request, board=board, live=True)


def _render_update(request: web.Request, snapshot: Snapshot) -> str:
    env = aiohttp_jinja2.get_env(request.app)
    board = snapshot.board
    if board is None:
        return json.dumps({"available": False, "live": False})
    context = template_context(request, board=board)
    banner = env.get_template("_banner.html").render(context)
    card = env.get_template("_alarm_card.html")
    alarms = [
        {"id": alarm.id, "html": card.render({**context, "alarm": alarm})} for alarm in board.alarms
    ]
    return json.dumps(
        {
            "available": True,
            "live": snapshot.live,
            "now": int(board.now.timestamp() * 1000),
            "banner": banner,
            "alarms": alarms,
        }
    )


async def events(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE, "")
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # nginx would otherwise buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # The browser may leave at any time (a new page, a closed tab): nothing to tell it.
    with contextlib.suppress(ConnectionResetError):
        await _stream(request, response, token)
    return response


async def _stream(request: web.Request, response: web.StreamResponse, token: str) -> None:
    feed = request.app[FEED]
    users = request.app[STORES].users
    await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
    version = 0
    while not feed.closed:
        snapshot = await feed.next_snapshot(version, PING_SECONDS)
        if feed.closed:
            break
        # Every update and ping reads the session again: a removed user, a logout
        # elsewhere or a role change applies to the open stream too.
        session = await users.session(token)
        if session is None:
            await response.write(b"event: logout\ndata: {}\n\n")
            break
        request[SESSION] = session
        if snapshot.version == version:
            await response.write(b"event: ping\ndata: {}\n\n")
            continue
        version = snapshot.version
        update = _render_update(request, snapshot)
        await response.write(f"event: board\ndata: {update}\n\n".encode())


async def stop_streams(app: web.Application) -> None:
    """On shutdown: end every stream now (the feed closes), so the server does not wait
    out its shutdown timeout for them."""
    await app[FEED].close()
