"""Abuse of the FastAGI port while real calls go on.

A helper process (tests/e2e/flood_client.py, its own process so it has its own core of
the two) opens 2,000 connections at once to the server's port and keeps them coming for
15 s: idle sockets, oversize and endless environment blocks, byte-a-minute senders,
clients vanishing mid-command, and sockets from 127.0.0.2, which the allow-list
(127.0.0.1/32 here) refuses. Meanwhile a SIPp desk phone calls the *599 probe through
the sandbox Asterisk. The same call is placed before the flood, so the run prints both
figures: answer-to-first-command (the 200 OK SIPp received to the moment the flow
started, which sends its first command at once) and the whole call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from fastagi.config import AgiSettings
from fastagi.flows.probe import ProbeFlow
from fastagi.store.probe import ProbeStore
from fastagi_dev.sandbox import Sandbox
from tests import sipp

# exclusive: the flood takes a core and the server's sessions; a timing test of another
# xdist worker running meanwhile would measure the flood, not the product.
pytestmark = [pytest.mark.e2e, pytest.mark.exclusive, pytest.mark.timeout(120)]

FLOOD_CONNECTIONS = 2000
FLOOD_SECONDS = 15.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class CallFigures:
    answer_to_first_command: float
    whole_call: float


class TimedProbe:
    """The probe flow, noting when each real call's flow started."""

    def __init__(self, flow: ProbeFlow) -> None:
        self.flow = flow
        self.started: dict[str, float] = {}
        self.errors: list[BaseException] = []

    async def __call__(self, session: AgiSession) -> None:
        if session.environment.uniqueid.startswith("flood."):
            await self.flow(session)  # a flood client: it vanishes mid-command
            return
        self.started[session.environment.channel] = time.time()
        try:
            await self.flow(session)
        except BaseException as exc:
            self.errors.append(exc)
            raise


async def real_call(sandbox: Sandbox, workdir: Path, probe: TimedProbe, ext: int) -> CallFigures:
    before = time.monotonic()
    result = await sipp.call_dtmf(
        # No "#" (see test_probe.py): the flow ends on GET DATA's timeout. The digits go
        # in when the prompt plays, however long the flood makes the flow take to ask.
        sandbox,
        workdir,
        service="*599",
        ext=ext,
        answers=["42"],
        within=20,
    )
    whole = time.monotonic() - before
    result.check()
    [ok] = result.received("SIP/2.0 200")[:1]
    [started] = [t for channel, t in probe.started.items() if f"/{ext}-" in channel]
    return CallFigures(started - ok.time.timestamp(), whole)


async def test_a_real_call_succeeds_during_a_flood_of_2000_hostile_connections(
    sandbox: Sandbox,
    agi_port: int,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastagi.agi")
    probe = TimedProbe(ProbeFlow(ProbeStore(db_pool)))
    settings = AgiSettings(port=agi_port, allowed_networks=["127.0.0.1/32"])
    async with AgiServer(settings, {"probe": probe}) as server:
        quiet = await real_call(sandbox, tmp_path / "quiet", probe, ext=101)

        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.flood_client",
            "127.0.0.1",
            str(agi_port),
            "--connections",
            str(FLOOD_CONNECTIONS),
            "--duration",
            str(FLOOD_SECONDS),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert flood.stdout is not None
            started = json.loads(await asyncio.wait_for(flood.stdout.readline(), 10))
            assert started == {"started": FLOOD_CONNECTIONS}
            # Let the 2,000 connects land and the slots fill before the call goes in.
            deadline = time.monotonic() + 5
            peak = 0
            while time.monotonic() < deadline and peak < settings.max_sessions:
                peak = max(peak, server.active_sessions)
                await asyncio.sleep(0.05)
            flooded = await real_call(sandbox, tmp_path / "flooded", probe, ext=102)
            peak = max(peak, server.active_sessions)
            counts = json.loads(await asyncio.wait_for(flood.stdout.readline(), 30))
            assert await asyncio.wait_for(flood.wait(), 10) == 0
        finally:
            if flood.returncode is None:
                flood.kill()
                await flood.wait()
        # Whatever the flood left behind goes by itself.
        await asyncio.wait_for(server.wait_idle(), settings.environment_timeout + 5)

    print(
        f"\nreal call, quiet: answer->first command {quiet.answer_to_first_command * 1000:.1f} ms,"
        f" whole call {quiet.whole_call:.2f} s"
        f"\nreal call, under a flood of {FLOOD_CONNECTIONS} connections:"
        f" answer->first command {flooded.answer_to_first_command * 1000:.1f} ms,"
        f" whole call {flooded.whole_call:.2f} s"
        f"\nflood: peak sessions {peak} (max_sessions {settings.max_sessions}), {counts}"
    )
    assert probe.errors == []
    rows = await db_pool.fetch("SELECT callerid, digits FROM probe_calls ORDER BY id")
    assert [(row["callerid"], row["digits"]) for row in rows] == [("101", "42"), ("102", "42")]
    # Asterisk gives up connecting after 2 s; the call did not come near that.
    assert flooded.answer_to_first_command < 2.0
    # The flood was what it claims to be.
    for kind in ("idle", "oversize", "endless", "slow", "vanish", "foreign"):
        assert counts.get(f"{kind}_connected", 0) > 0, counts
    assert counts.get("vanish_got_command", 0) > 0, counts
    assert peak >= settings.max_sessions * 0.9
    messages = [record.getMessage() for record in caplog.records]
    assert any("evicted at max_sessions" in message for message in messages)
    assert any("environment larger than" in message for message in messages)
    assert any("environment longer than" in message for message in messages)
    refused = [r for r in caplog.records if "is not in allowed_networks" in r.getMessage()]
    assert refused
    assert all(r.__dict__["peer"].startswith("127.0.0.2:") for r in refused)
