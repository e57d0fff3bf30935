"""The foundation end to end: a SIPp desk phone calls the connectivity probe (*599) in
the sandbox Asterisk, which hands the call to our FastAGI server over the network; the
flow reads DTMF sent as SIP INFO and writes a row to PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fastagi.agi.errors import AgiHangup
from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from fastagi.config import AgiSettings
from fastagi.flows.probe import ProbeFlow
from fastagi.store.probe import ProbeStore
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.ami import AmiClient
from tests import sipp

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


class RecordingStore:
    """The real ProbeStore, remembering what the flow asked it to record."""

    def __init__(self, store: ProbeStore) -> None:
        self.store = store
        self.calls: list[dict[str, Any]] = []

    async def record(self, **fields: Any) -> int:
        self.calls.append(fields)
        return await self.store.record(**fields)


class ObservedProbe:
    """The probe flow, with what happened to each session kept for the test body."""

    def __init__(self, flow: ProbeFlow) -> None:
        self.flow = flow
        self.environments: list[Any] = []
        self.errors: list[BaseException] = []
        self.finished = asyncio.Event()

    async def __call__(self, session: AgiSession) -> None:
        self.environments.append(session.environment)
        try:
            await self.flow(session)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.finished.set()


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    async with await sandbox.ami() as client:
        yield client


def probe_ended(uniqueid: str) -> Any:
    return lambda event: event.get("Uniqueid") == uniqueid


async def test_desk_phone_probe_records_digits_caller_and_row(
    sandbox: Sandbox,
    agi_port: int,
    db_pool: asyncpg.Pool[asyncpg.Record],
    ami: AmiClient,
    tmp_path: Path,
) -> None:
    recorder = RecordingStore(ProbeStore(db_pool))
    probe = ObservedProbe(ProbeFlow(recorder))
    async with AgiServer(AgiSettings(port=agi_port), {"probe": probe}):
        # No "#": the flow ends on GET DATA's timeout, so the digits are all it got.
        call = await sipp.call_dtmf(sandbox, tmp_path, service="*599", ext=101, answers=["42"])
        await asyncio.wait_for(probe.finished.wait(), 10)
    call.check()

    assert probe.errors == []
    [environment] = probe.environments
    assert environment.script == "probe"
    assert environment.query == {"source": "dialplan"}
    assert environment.args == ("101",)
    assert environment.callerid == "101"

    [recorded] = recorder.calls
    assert recorded["digits"] == "42"
    assert recorded["callerid"] == "101"
    rows = await db_pool.fetch("SELECT uniqueid, callerid, digits, route FROM probe_calls")
    assert [dict(row) for row in rows] == [
        {
            "uniqueid": environment.uniqueid,
            "callerid": "101",
            "digits": "42",
            "route": "probe?source=dialplan",
        }
    ]
    end = await ami.wait_event(
        "UserEvent", UserEvent="FastAGIProbeEnd", where=probe_ended(environment.uniqueid)
    )
    assert end["AGISTATUS"] == "SUCCESS"
    assert end["FASTAGI_STATUS"] == "OK"
    # Asterisk ended the call once the server closed the socket and the dialplan went on.
    assert call.received("BYE")


async def test_caller_hanging_up_mid_prompt_is_seen_and_the_socket_closed(
    sandbox: Sandbox,
    agi_port: int,
    db_pool: asyncpg.Pool[asyncpg.Record],
    ami: AmiClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    probe = ObservedProbe(ProbeFlow(ProbeStore(db_pool)))
    async with AgiServer(AgiSettings(port=agi_port), {"probe": probe}) as server:
        call = await sipp.call_dtmf(sandbox, tmp_path, service="*599", hang_up=True)
        await asyncio.wait_for(probe.finished.wait(), 10)
        await asyncio.wait_for(server.wait_idle(), 5)
        assert server.active_sessions == 0
    call.check()

    [environment] = probe.environments
    [error] = probe.errors
    assert isinstance(error, AgiHangup)
    assert any(
        record.message == "caller hung up during the probe prompt"
        and getattr(record, "agi_uniqueid", None) == environment.uniqueid
        for record in caplog.records
    )
    assert await db_pool.fetchval("SELECT count(*) FROM probe_calls") == 0
    end = await ami.wait_event(
        "UserEvent", UserEvent="FastAGIProbeEnd", where=probe_ended(environment.uniqueid)
    )
    assert end["AGISTATUS"] == "HANGUP"


async def test_unknown_route_sets_status_and_hangs_up(
    sandbox: Sandbox, agi_port: int, ami: AmiClient, tmp_path: Path
) -> None:
    async with AgiServer(AgiSettings(port=agi_port), {}):
        call = await sipp.call_dtmf(sandbox, tmp_path, service="*599", ext=102)
    call.check()
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIProbeEnd")
    assert end["FASTAGI_STATUS"] == "NOROUTE"
    assert end["AGISTATUS"] == "SUCCESS"
