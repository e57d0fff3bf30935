"""The FastAGI server's own counters (fastagi/agi/stats.py): a histogram in Prometheus's
cumulative form."""

from __future__ import annotations

import asyncio

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from fastagi.agi.stats import AgiStats, LatencyHistogram
from tests.unit.test_agi_server import agi_settings, asterisk_connection, env_bytes


def test_buckets_are_cumulative_and_a_bound_is_inclusive() -> None:
    histogram = LatencyHistogram(bounds=(0.01, 0.1))
    for seconds in (0.001, 0.01, 0.05, 0.1, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [(0.01, 2), (0.1, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert round(histogram.total, 3) == 3.161


def test_sessions_are_counted_per_route() -> None:
    stats = AgiStats()
    for route in ("panic", "probe", "panic"):
        stats.session_started(route)
    assert stats.sessions == {"panic": 2, "probe": 1}


async def test_the_server_counts_sessions_per_route_and_its_turn_per_command() -> None:
    thinking = asyncio.Event()

    async def probe(session: AgiSession) -> None:
        await session.answer()
        await thinking.wait()  # the server's turn: Asterisk waits on it
        await session.set_variable("FASTAGI_STATUS", "OK")

    async with AgiServer(agi_settings(), {"probe": probe}) as server:
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(env_bytes("probe"))
            assert await asterisk.command() == b"ANSWER\n"
            await asterisk.send(b"200 result=0\n")
            asyncio.get_running_loop().call_later(0.05, thinking.set)
            assert await asterisk.command() == b"SET VARIABLE FASTAGI_STATUS OK\n"
            await asterisk.send(b"200 result=1\n")
            assert await asterisk.closed_by_server()
        async with asterisk_connection(server) as asterisk:
            await asterisk.send(env_bytes("nowhere"))
            assert (await asterisk.command()).startswith(b"VERBOSE")
            await asterisk.send(b"200 result=1\n")
            assert await asterisk.command() == b"SET VARIABLE FASTAGI_STATUS NOROUTE\n"
            await asterisk.send(b"200 result=1\n")
            assert await asterisk.closed_by_server()
        await server.wait_idle()
    stats = server.stats
    assert stats.sessions == {"probe": 1, "(no route)": 1}
    # Four commands: three at once, SET VARIABLE OK after the flow's 50 ms.
    assert stats.latency.count == 4
    latency = dict(stats.latency.cumulative())
    assert latency[0.025] == 3
    assert latency[0.1] == 4
