"""The floor of ``bench.calls``: the least a FastAGI server can do for the same calls.

A minimal asyncio FastAGI server that sends the same AGI commands and runs the same SQL
as ours for the routes the bench storms, and nothing else: no logging, no settings, no
session object, no history recorder, no protection against abuse. What our server costs
above it per call is what its structure costs; the ratio of the two, measured in the same
run, is what ``bench.calls`` reports.

It measures its per-command turnaround the way ours does (fastagi/agi/session.py): from
Asterisk's last line (the environment, or a reply) to the next command written, into the
same ``LatencyHistogram``.

``python -m bench.floor_server --port P --dsn DSN``: prints ``LISTENING <port>``; each
``STATS`` line on stdin is answered with ``STATS <json>`` (calls completed and failed so
far, the histogram's counts); EOF on stdin stops it. Same event loop (uvloop), garbage
collector settings (``bench.agi_load.set_gc``) and pool size as ``fastagi serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from fastagi.agi.stats import LatencyHistogram

# The probe's SQL, as fastagi/store/probe.py sends it (the same text: the same prepared
# statement on the server side).
PROBE_INSERT = """
            INSERT INTO probe_calls
                (uniqueid, channel, callerid, calleridname, digits, route)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING id
            """
# fastagi/flows/probe.py's prompt and limits.
PROBE_PROMPT = "vm-enter-num-to-call"
PROBE_TIMEOUT_MS = 5000
PROBE_MAX_DIGITS = 8
# The panic flow's SQL (fastagi/store/history.py insert_event, fastagi/store/policy.py,
# fastagi/store/alarms.py activate), the same texts.
INSERT_EVENT = """
        INSERT INTO alarm_events
            (event_id, occurred_at, alarm_id, kind, extension, department, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
        ON CONFLICT (event_id) DO NOTHING
        """
SELECT_SETTINGS = "SELECT * FROM alarm_settings"
INSERT_ALARM = """
                    INSERT INTO alarms (alarm_key, department_id, department_name, extension)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (alarm_key) WHERE state = 'active' DO NOTHING
                    RETURNING *
                    """
LOCK_ALARM = """
                        SELECT * FROM alarms
                        WHERE alarm_key = $1 AND state = 'active'
                        FOR UPDATE
                        """
# fastagi/flows/panic.py: the question's timeout and keys.
CONFIRM_TIMEOUT_MS = 5000
# What fastagi.config.DatabaseSettings gives `fastagi serve` by default.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10


class CallFailed(Exception):
    """Asterisk answered a command with something other than 200."""


@dataclass
class FloorStats:
    completed: int = 0
    failed: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


class Call:
    """One FastAGI connection: the environment, then one command at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: FloorStats
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.latency = stats.latency
        self.env: dict[str, str] = {}
        self.heard_at = 0.0

    async def read_environment(self) -> None:
        while line := await self.reader.readline():
            if line == b"\n":
                self.heard_at = time.monotonic()
                return
            key, _, value = line.decode().rstrip("\n").partition(": ")
            self.env[key] = value
        raise CallFailed("closed during the environment")

    async def command(self, line: str) -> str:
        """Send one command; the reply's result (and data), e.g. ``"1 (timeout)"``."""
        self.latency.observe(time.monotonic() - self.heard_at)
        self.writer.write(line.encode() + b"\n")
        while True:
            reply = await self.reader.readline()
            self.heard_at = time.monotonic()
            if not reply:
                raise CallFailed(f"closed after {line!r}")
            if reply.startswith(b"200 result="):
                return reply[11:].decode().rstrip("\n")
            if reply != b"HANGUP\n":  # out of band: the reply still follows
                raise CallFailed(f"{line!r}: {reply!r}")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def probe(call: Call, pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """fastagi/flows/probe.py: prompt, digits, one row, two variables."""
    env = call.env
    await call.command("ANSWER")
    result = await call.command(f"GET DATA {PROBE_PROMPT} {PROBE_TIMEOUT_MS} {PROBE_MAX_DIGITS}")
    digits = result.split(" ", 1)[0]
    callerid = env.get("agi_callerid")
    calleridname = env.get("agi_calleridname")
    await pool.fetchval(
        PROBE_INSERT,
        env["agi_uniqueid"],
        env["agi_channel"],
        None if callerid == "unknown" else callerid,
        None if calleridname == "unknown" else calleridname,
        digits,
        env.get("agi_network_script", ""),
    )
    await call.command(f"SET VARIABLE FASTAGI_PROBE_DIGITS {_quoted(digits)}")
    await call.command("SET VARIABLE FASTAGI_STATUS OK")


@dataclass(frozen=True)
class PanicSite:
    """What the panic flow finds in its directory and its prompt cache: given by the bench
    (every caller is in one department), so the floor neither looks up nor renders."""

    department_id: int
    department: str
    question: str  # the prompts' names as Asterisk plays them
    activated: str
    cancelled: str


async def _event(
    pool: asyncpg.Pool[asyncpg.Record],
    call: Call,
    site: PanicSite,
    kind: str,
    details: dict[str, object],
    *,
    alarm_id: int | None = None,
    connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None,
) -> None:
    env = call.env
    extension = env["agi_channel"].partition("/")[2].rpartition("-")[0]
    arguments = (
        uuid.uuid4(),
        datetime.datetime.now(datetime.UTC),
        alarm_id,
        kind,
        extension,
        site.department,
        json.dumps(
            {
                "route": "panic",
                "uniqueid": env["agi_uniqueid"],
                "channel": env["agi_channel"],
                **details,
            }
        ),
    )
    if connection is None:
        await pool.execute(INSERT_EVENT, *arguments)
    else:
        await connection.execute(INSERT_EVENT, *arguments)


async def panic(call: Call, pool: asyncpg.Pool[asyncpg.Record], site: PanicSite) -> None:
    """fastagi/flows/panic.py for a known extension whose question is rendered: who
    calls, triggered, the policy, the question, the answer; confirmed: the alarm
    activated (re-triggered) in one transaction with its event."""
    env = call.env
    await call.command("GET VARIABLE AMPUSER")
    extension = env["agi_channel"].partition("/")[2].rpartition("-")[0]
    await _event(
        pool, call, site, "triggered", {"caller_source": "endpoint", "known_extension": True}
    )
    await pool.fetchrow(SELECT_SETTINGS)
    await _event(pool, call, site, "prompt_played", {"prompt": 1, "tts": True})
    result = await call.command(f"GET DATA {site.question} {CONFIRM_TIMEOUT_MS} 1")
    digits = result.split(" ", 1)[0]
    if digits == "2":
        await _event(pool, call, site, "cancelled", {"prompts": 1})
        await call.command("SET VARIABLE FASTAGI_STATUS CANCELLED")
        await call.command(f"EXEC Playback {site.cancelled}")
        return
    if digits != "1":
        raise CallFailed(f"the panic question got {result!r}")
    await _event(pool, call, site, "confirmed", {"prompts": 1})
    key = f"department:{site.department_id}"
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            INSERT_ALARM, key, site.department_id, site.department, extension
        )
        kind = "activated"
        if row is None:
            row = await connection.fetchrow(LOCK_ALARM, key)
            kind = "retriggered"
        assert row is not None
        await _event(
            pool,
            call,
            site,
            kind,
            {"uniqueid": env["agi_uniqueid"], "instance": "floor"},
            alarm_id=row["id"],
            connection=connection,
        )
    await call.command("SET VARIABLE FASTAGI_STATUS CONFIRMED")
    with contextlib.suppress(CallFailed):  # the caller hangs up during it
        await call.command(f"EXEC Playback {site.activated}")


Route = Callable[[Call, "asyncpg.Pool[asyncpg.Record]"], Awaitable[None]]


async def _serve_call(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    routes: dict[str, Route],
    pool: asyncpg.Pool[asyncpg.Record],
    stats: FloorStats,
) -> None:
    call = Call(reader, writer, stats)
    try:
        await call.read_environment()
        script = call.env.get("agi_network_script", "")
        await routes[script.split("?", 1)[0]](call, pool)
    except (CallFailed, KeyError, OSError, asyncpg.PostgresError):
        stats.failed += 1
    else:
        stats.completed += 1
    finally:
        writer.close()


def stats_line(stats: FloorStats) -> str:
    figures = {
        "completed": stats.completed,
        "failed": stats.failed,
        "latency_counts": stats.latency.counts,
        "latency_sum": stats.latency.total,
    }
    return f"STATS {json.dumps(figures)}"


async def _no_reset_query(_connection: asyncpg.Connection[asyncpg.Record]) -> None:
    pass


async def serve(host: str, port: int, dsn: str, site: PanicSite) -> int:
    stats = FloorStats()
    routes: dict[str, Route] = {
        "probe": probe,
        "panic": lambda call, pool: panic(call, pool, site),
    }
    # The pool resets connections as ours does (fastagi/store/pool.py): no reset query
    # after each statement, so both servers send PostgreSQL the same statements.
    pool = await asyncpg.create_pool(
        dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE, reset=_no_reset_query
    )
    server = await asyncio.start_server(
        lambda r, w: _serve_call(r, w, routes, pool, stats), host, port, backlog=1024
    )
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    try:
        while line := await control.readline():
            if line.strip() == b"STATS":
                print(stats_line(stats), flush=True)
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
        await pool.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    from bench.agi_load import set_gc

    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument(
        "--panic",
        required=True,
        help="JSON: department_id, department, question, activated, cancelled",
    )
    args = parser.parse_args(argv)
    site = PanicSite(**json.loads(args.panic))
    set_gc("tuned")  # what fastagi.app.run does
    return uvloop.run(serve(args.host, args.port, args.dsn, site))


if __name__ == "__main__":
    sys.exit(main())
