"""The benchmark flow served by panoramisk 1.4's FastAGI ``Application``: the baseline.

Written the way panoramisk's own docs use it (``Application.add_route`` plus
``asyncio.start_server(app.handler, ...)``). What its ``handler`` does, from its source, and
what the driver has to live with:
- it reads the environment 100 bytes at a time until it sees ``b"\\n\\n"``; a peer that closes
  before that makes it spin forever, so the driver always sends the whole block at once;
- it routes on ``agi_network_script`` exactly, so the URL must carry no query string
  (``agi://127.0.0.1/bench``, never ``bench?x=1``);
- each ``send_command`` writes one line and reads one reply line with no timeout;
- when the route returns (or raises, which it logs and swallows) it calls ``writer.close()``
  without waiting: the driver sees an EOF after the reply to HANGUP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from panoramisk.fast_agi import Application

ROUTE = "bench"


@dataclass
class FlowStats:
    """Counts of flows run by this process, so the load driver can check the server side."""

    completed: int = 0
    failed: int = 0


class AgiReplyError(Exception):
    """panoramisk turned a reply into an error dict."""


async def _command(request: Any, command: str) -> dict[str, Any]:
    reply: dict[str, Any] = await request.send_command(command)
    if "error" in reply:
        raise AgiReplyError(f"{command!r}: {reply}")
    return reply


def make_handler(stats: FlowStats) -> Any:
    """The six-command flow, as a panoramisk route handler."""

    async def bench_flow(request: Any) -> None:
        try:
            await _command(request, "ANSWER")
            caller = await _command(request, 'GET VARIABLE "CALLERID(num)"')
            if not caller["result"][1]:
                raise AgiReplyError(f"no caller id: {caller}")
            await _command(request, 'STREAM FILE beep ""')
            data = await _command(request, "GET DATA prompt 3000 4")
            digits = data["result"][0]
            await _command(request, f"SET VARIABLE RESULT {digits}")
            await _command(request, "HANGUP")
        except BaseException:
            stats.failed += 1
            raise  # panoramisk logs it and closes the socket
        stats.completed += 1

    return bench_flow


async def start(host: str, port: int, stats: FlowStats, backlog: int = 100) -> asyncio.Server:
    """Listen with panoramisk's handler; call from inside the running loop.

    ``backlog`` defaults to ``asyncio.start_server``'s, as in panoramisk's docs; the
    benchmark passes the same value every server under test gets.
    """
    # Application() calls asyncio.get_event_loop(): inside a running loop that is the loop.
    app = Application()
    app.add_route(ROUTE, make_handler(stats))
    return await asyncio.start_server(app.handler, host, port, backlog=backlog)
