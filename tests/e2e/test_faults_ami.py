"""Faults between the server and Asterisk, with the production wiring (``running_server``)
in-process: Asterisk restarted during an alarm, a half-open AMI connection, and paging
phones that are busy, unreachable or answer.

Extensions: desk phones 180-189, paging phones 260-268 (apart from other tests).
"""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from fastagi.app import running_server
from fastagi.config import (
    AgiSettings,
    AlarmSettings,
    Settings,
)
from fastagi.store import Stores
from fastagi.store.history import StoredEvent
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.ports import free_port
from fastagi_dev.sandbox.settings import ami_settings, server_settings
from tests import sipp
from tests.e2e.server_process import (
    events,
    gaps,
    recorded_page_starts,
    seed_department,
    wait_alarm,
)
from tests.tcp_proxy import StallingProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INTERVAL = 5
MIN_GAP = INTERVAL * 0.9
PING = 1.0  # ping_interval and ping_timeout of the server under test
# AmiClient's reconnect backoff (its defaults): the n-th wait is drawn from [d/2, d],
# d = min(30, 0.5 * 2**n).
RECONNECT_INITIAL, RECONNECT_MAX = 0.5, 30.0


def longest_reconnect_wait(down_for: float) -> float:
    """The longest the first reconnect attempt after Asterisk is back can take, when it
    came back ``down_for`` seconds after the connection was lost: the longest backoff
    step that may be under way at that moment (the last step that can have begun by
    then, every earlier one at its shortest)."""
    step, earliest_start = 0, 0.0
    while True:
        longest = min(RECONNECT_MAX, RECONNECT_INITIAL * 2.0**step)
        if earliest_start + longest / 2 > down_for:
            return longest
        earliest_start += longest / 2
        step += 1


def settings_for(
    sandbox: Sandbox, agi_port: int, dsn: str, ami_port: int | None = None
) -> Settings:
    return server_settings(
        sandbox,
        agi_port,
        dsn,
        agi=AgiSettings(port=agi_port, shutdown_grace=1),
        ami=ami_settings(
            sandbox, port=ami_port or sandbox.ami_port, ping_interval=PING, ping_timeout=PING
        ),
        alarm=AlarmSettings(
            lead_in=0.3, page_timeout=5, takeover_interval=1.0, announcement="Panic {extension}."
        ),
    )


async def panic_call(sandbox: Sandbox, workdir: Path, ext: int) -> None:
    result = await sipp.call_dtmf(
        sandbox,
        workdir,
        service="*555",
        ext=ext,
        answers=["1"],
    )
    result.check()


async def lamp(sandbox: Sandbox, device: str = "Custom:PANIC") -> str:
    async with await sandbox.ami(events=False) as ami:
        reply = await ami.action({"Action": "Getvar", "Variable": f"DEVICE_STATE({device})"})
    return reply.get("Value", "")


async def wait_lamp(sandbox: Sandbox, state: str, *, within: float) -> None:
    async with asyncio.timeout(within):
        # A fresh AMI login each time: the lamp must be read across Asterisk restarts.
        while await lamp(sandbox) != state:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def cycle_summary(cycles: list[StoredEvent]) -> list[tuple[object, ...]]:
    return [
        (c.details["cycle"], c.details["dialled"], c.details["answered"], c.details["error"])
        for c in cycles
    ]


async def test_asterisk_restart_reconnects_relights_lamps_and_records_missed_cycles(
    sandbox_factory,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    agi_port = free_port(socket.SOCK_STREAM)
    box: Sandbox = sandbox_factory(f"agi://127.0.0.1:{agi_port}")
    store = Stores.over(db_pool)
    await seed_department(store, "Fault Ward R", "180", ["PJSIP/260"], INTERVAL)
    phone = await stack.enter_async_context(sipp.PagingPhone(box, 260, tmp_path))
    await stack.enter_async_context(running_server(settings_for(box, agi_port, database_dsn)))

    await panic_call(box, tmp_path / "trigger", 180)
    alarm = await wait_alarm(store, "180", cycles=1, within=20)
    await wait_lamp(box, "BUSY", within=5)
    before = len(phone.invite_times)

    # Asterisk goes away for more than one interval, and comes back with an empty astdb
    # (a new machine, or a lost /var/lib/asterisk): only the server can relight the lamps.
    down_at = time.time()
    await box.stop()
    (box.instance_dir / "lib" / "astdb.sqlite3").unlink(missing_ok=True)
    await asyncio.sleep(INTERVAL + 1)  # the outage
    box.launch()  # the same ports, the same AMI secret
    await box.wait_booted()
    up_at = time.time()
    await wait_lamp(box, "BUSY", within=20)
    relit_after = time.time() - up_at
    times = await phone.wait_invites(before + 2, within=25)
    paging_after = times[before].timestamp() - up_at
    reconnect_within = longest_reconnect_wait(up_at - down_at) + 1.0
    # No page doubled: by the starts the server recorded (the INVITEs add Asterisk's
    # dialling time, which a loaded machine stretches).
    starts = await recorded_page_starts(store, alarm.id, len(times), heard=True)
    print(
        f"Asterisk down {up_at - down_at:.1f} s; lamp relit {relit_after:.2f} s and paging"
        f" resumed {paging_after:.2f} s after it booted (reconnect within"
        f" {reconnect_within:g} s by the backoff); gaps {gaps(starts)}"
    )
    assert min(gaps(starts)) >= MIN_GAP, gaps(starts)
    # Reconnected within the backoff step under way when Asterisk came back (+1 s for
    # the login, FullyBooted and the lamp's SetVar); the lamp set again at once, and
    # paging too: the loop's pages meanwhile were never sent, so it waited for AMI, not
    # for its next cycle (which came up to an interval later before).
    assert relit_after <= reconnect_within, (relit_after, reconnect_within)
    assert paging_after <= relit_after + 1.0, (paging_after, relit_after)

    # Every page the phone received is recorded once (the last one when it has ended);
    # the cycles Asterisk could not take while it was down are recorded with their error.
    async with asyncio.timeout(10):
        while True:
            cycles = await events(store, alarm.id, "page_cycle")
            heard = [c for c in cycles if c.details["answered"]]
            if len(heard) >= len(times):
                break
            await asyncio.sleep(0.1)
    print(cycle_summary(cycles))
    numbers = [c.details["cycle"] for c in cycles]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    missed = [c for c in cycles if c.details["error"] is not None]
    assert len(heard) == len(phone.invite_times), (cycle_summary(cycles), phone.invite_times)
    assert missed, "no missed cycle recorded during the outage"
    # Those the loop could not even send (no AMI connection) say so.
    assert any(c.details.get("unsent") is True for c in missed), cycle_summary(cycles)
    # The lamps set again after the reconnection are recorded (with no alarm id: a
    # re-apply has no single cause).
    relit = await db_pool.fetch(
        "SELECT details FROM alarm_events WHERE kind = 'lamp_changed' AND alarm_id IS NULL"
        " AND occurred_at > to_timestamp($1)",
        up_at,
    )
    print(f"{len(missed)} missed cycles recorded; lamp events after the restart: {len(relit)}")
    assert relit


async def test_half_open_ami_connection_is_detected_and_replaced(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    proxy = StallingProxy(sandbox.ami_host, sandbox.ami_port)
    await proxy.start()
    stack.push_async_callback(proxy.close)
    store = Stores.over(db_pool)
    await seed_department(store, "Fault Ward H", "181", ["PJSIP/261"], INTERVAL)
    phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 261, tmp_path))
    settings = settings_for(sandbox, agi_port, database_dsn, ami_port=proxy.port)
    await stack.enter_async_context(running_server(settings))

    await panic_call(sandbox, tmp_path / "trigger", 181)
    alarm = await wait_alarm(store, "181", cycles=1, within=20)
    loop = asyncio.get_running_loop()
    connections = len(proxy.accepted_at)
    stalled_at = loop.time()
    assert proxy.stall() >= 1
    async with asyncio.timeout(2 * PING + 10):
        # The proxy's accept log is the only outside sign of the server reconnecting.
        while len(proxy.accepted_at) == connections:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    detected_after = proxy.accepted_at[connections] - stalled_at
    print(f"half-open AMI connection replaced {detected_after:.2f} s after it went silent")
    # One ping interval, one ping timeout, then the first backoff step (at most 0.5 s).
    assert detected_after <= 2 * PING + 1.0, detected_after
    before = len(phone.invite_times)
    times = await phone.wait_invites(before + 2, within=20)
    starts = await recorded_page_starts(store, alarm.id, len(times), heard=True)
    assert min(gaps(starts)) >= MIN_GAP, gaps(starts)
    cycles = await events(store, alarm.id, "page_cycle")
    print(cycle_summary(cycles))
    numbers = [c.details["cycle"] for c in cycles]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


async def test_busy_unreachable_and_answering_phones_recorded_per_cycle(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    store = Stores.over(db_pool)
    # 262 answers, 263 has no phone at all (unreachable), 264 answers 486 Busy Here.
    await seed_department(
        store, "Fault Ward M", "182", ["PJSIP/262", "PJSIP/263", "PJSIP/264"], INTERVAL
    )
    # Nobody in this group answers.
    await seed_department(store, "Fault Ward N", "183", ["PJSIP/263", "PJSIP/264"], INTERVAL)
    answering = await stack.enter_async_context(sipp.PagingPhone(sandbox, 262, tmp_path))
    busy = await stack.enter_async_context(sipp.Phone(sandbox, 264, tmp_path, "uas_busy.xml"))
    await stack.enter_async_context(running_server(settings_for(sandbox, agi_port, database_dsn)))

    await panic_call(sandbox, tmp_path / "trigger-m", 182)
    await panic_call(sandbox, tmp_path / "trigger-n", 183)
    m = await wait_alarm(store, "182", cycles=3, within=30)
    n = await wait_alarm(store, "183", cycles=3, within=30)
    m_cycles = (await events(store, m.id, "page_cycle"))[:3]
    n_cycles = (await events(store, n.id, "page_cycle"))[:3]
    print("M", cycle_summary(m_cycles))
    print("N", cycle_summary(n_cycles))
    assert [(c.details["dialled"], c.details["answered"]) for c in m_cycles] == [(3, 1)] * 3
    assert all(c.details["error"] is None for c in m_cycles)
    assert all(c.details["answered"] == 0 for c in n_cycles)
    assert all(c.details["error"] for c in n_cycles)
    assert len(answering.invite_times) >= 3
    assert len(busy.received("INVITE")) >= 6  # both groups, three cycles each
