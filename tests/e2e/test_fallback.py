"""The dialplan raises the alarm when no FastAGI server answers (extensions_custom.conf,
``[fastagi-panic-fallback]``), and a server that is back adopts it
(fastagi/alarms/fallback.py): SIPp phones, a sandbox Asterisk of each test's own (its
astdb and globals start empty), real ``fastagi serve`` processes logged in to AMI as the
least-privileged user (no ``system`` or ``command`` write), PostgreSQL.

What is measured: from the confirming key (the INFO the caller's SIPp sent) to the
INVITE a fallback phone received; and, after the handover, that the dialplan pages no
more while the server pages the department at its interval.

Extensions: desk phones 190-199; fallback phones 280 and 281 (the sandbox's
FASTAGI_PANIC_FALLBACK_DEVICES), department and emergency phones 282-285.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import socket
import statistics
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from fastagi.config import AgiSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.fallback import FAMILY
from fastagi.store import Stores
from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from fastagi_dev.sandbox.instance import TRUNK_ENDPOINT, Sandbox
from fastagi_dev.sandbox.ports import free_port
from tests import sipp
from tests.e2e.server_process import (
    ServerProcess,
    events,
    gaps,
    seed_department,
    server_env,
    wait_alarm,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FALLBACK_PHONES = (280, 281)
INTERVAL = 5  # the department's, paged by the server
FALLBACK_INTERVAL = 8  # the dialplan's (its announcement takes about 5 s)
KEY_TO_PAGE_LIMIT = 2.0  # seconds, the requirement
CALLS = 10
# What a server logs once it has adopted an entry (after deleting it).
ADOPTED = "adopted the alarm the dialplan raised"
_ASTDB_LINE = re.compile(rf"^/{FAMILY}/(\S+?)\s*:\s*(\S*)\s*$", re.M)


def dead_port() -> int:
    """A port nothing listens on: Asterisk's AGI() is refused at once (AGISTATUS FAILURE)."""
    return free_port(socket.SOCK_STREAM)


async def fallback_box(
    sandbox_factory: Callable[..., Sandbox], *, pages: int, url2: str | None = None
) -> tuple[Sandbox, int]:
    """A sandbox whose FASTAGI_PANIC_URL reaches no server; and that URL's port."""
    port = dead_port()
    box = sandbox_factory(f"agi://127.0.0.1:{port}")
    for name, value in {
        "FASTAGI_PANIC_FALLBACK_PAGES": str(pages),
        "FASTAGI_PANIC_FALLBACK_INTERVAL": str(FALLBACK_INTERVAL),
        "FASTAGI_PANIC_FALLBACK_LEAD_IN": "0.3",
        "FASTAGI_PANIC_FALLBACK_RING": "5",
        **({"FASTAGI_PANIC_URL2": url2} if url2 else {}),
    }.items():
        # FreePBX: lines in globals_custom.conf; here set at run time.
        await box.acli(f"dialplan set global {name} {value}")
    return box, port


async def astdb(box: Sandbox) -> dict[str, str]:
    """The fallback family, keys relative to it (``<id>``, ``<id>/pages``)."""
    return dict(_ASTDB_LINE.findall(await box.acli(f"database show {FAMILY}")))


async def confirm(box: Sandbox, workdir: Path, ext: int) -> dt.datetime:
    """Desk phone ``ext`` dials *555 and presses 1 during the question; when it did."""
    call = await sipp.call_dtmf(box, workdir, service="*555", ext=ext, answers=["1"])
    call.check()
    [key] = [m.time for m in call.messages if not m.received and m.first_line.startswith("INFO")]
    return key


async def start_server(
    stack: AsyncExitStack,
    name: str,
    box: Sandbox,
    port: int,
    dsn: str,
    tmp_path: Path,
    extra: dict[str, str] | None = None,
) -> ServerProcess:
    env = server_env(
        box,
        port,
        dsn,
        extra={"FASTAGI_AMI__USERNAME": box.least_ami_username, **(extra or {})},
    )
    server = ServerProcess(name, env, tmp_path / f"{name}.log")
    stack.push_async_callback(server.kill)
    await server.start()
    return server


async def wait_log(*servers: ServerProcess, line: str, within: float = 15.0) -> None:
    """Until ``line`` is in the log of one of ``servers``."""
    async with asyncio.timeout(within):
        # A child process's log is the only sign it gives.
        while not any(line in server.log() for server in servers):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def lamp(ami: SandboxAmi) -> str:
    response = await ami.action({"Action": "Getvar", "Variable": "DEVICE_STATE(Custom:PANIC)"})
    return response["Value"]


async def deactivate(store: Stores, alarm_id: int) -> None:
    alarm = await store.alarms.get_alarm(alarm_id)
    assert alarm is not None
    event = HistoryEvent(EventKind.DEACTIVATED, alarm.id, alarm.extension, alarm.department_name)
    assert await store.alarms.deactivate(alarm.id, "test", "done", event) is not None


def aware(moment: dt.datetime) -> dt.datetime:
    """SIPp logs local time without a zone; PostgreSQL's are aware."""
    return moment.astimezone() if moment.tzinfo is None else moment


def after(times: list[dt.datetime], moment: dt.datetime) -> list[dt.datetime]:
    return [t for t in times if aware(t) > aware(moment)]


async def test_no_server_the_fallback_phones_are_paged_within_2_s_of_the_key(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, stack: AsyncExitStack
) -> None:
    box, _ = await fallback_box(sandbox_factory, pages=1)
    ami = await stack.enter_async_context(await box.ami())
    phones = [
        await stack.enter_async_context(sipp.PagingPhone(box, ext, tmp_path))
        for ext in FALLBACK_PHONES
    ]
    delays = []
    for n in range(CALLS):
        key = await confirm(box, tmp_path / f"call-{n}", 190 + n % 5)
        end = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
        assert (end["AGISTATUS"], end["FASTAGI_STATUS"], end["FALLBACK"]) == (
            "FAILURE",
            "",
            "RAISED",
        )
        invites = [(await phone.wait_invites(n + 1))[n] for phone in phones]
        delays.append(max((invite - key).total_seconds() for invite in invites))
    ordered = sorted(delays)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank: of 10, the largest
    print(
        f"confirming key to the page on both fallback phones over {CALLS} calls: "
        f"p50 {statistics.median(delays):.3f} s, p95 {p95:.3f} s, "
        f"all {[round(d, 3) for d in delays]}"
    )
    assert p95 <= KEY_TO_PAGE_LIMIT, delays
    # Each alarm is kept for a server, with its caller; the lamp is lit.
    entries = {k: v for k, v in (await astdb(box)).items() if "/" not in k}
    assert sorted(v.split("|")[0] for v in entries.values()) == sorted(
        str(190 + n % 5) for n in range(CALLS)
    )
    assert await lamp(ami) == "BUSY"
    # One page per alarm (FASTAGI_PANIC_FALLBACK_PAGES=1), each to both phones.
    assert [len(p.invite_times) for p in phones] == [CALLS, CALLS]
    assert '"PANIC" <sip:190@' in phones[0].received("INVITE")[0].text
    assert "something-terribly-wrong" not in box.log_path.read_text(errors="replace")


async def test_a_server_started_again_adopts_the_alarm_and_the_dialplan_stops(
    sandbox_factory: Callable[..., Sandbox],
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    box, port = await fallback_box(sandbox_factory, pages=20)
    ami = await stack.enter_async_context(await box.ami())
    store = Stores.over(db_pool)
    await seed_department(store, "Fallback Ward", "195", ["PJSIP/282"], INTERVAL)
    fallback_phone = await stack.enter_async_context(sipp.PagingPhone(box, 280, tmp_path))
    ward_phone = await stack.enter_async_context(sipp.PagingPhone(box, 282, tmp_path))

    # The server is down: the dialplan pages on its own, at its interval.
    key = await confirm(box, tmp_path / "trigger", 195)
    dialplan_pages = await fallback_phone.wait_invites(2, within=FALLBACK_INTERVAL + 5)
    assert (dialplan_pages[0] - key).total_seconds() <= KEY_TO_PAGE_LIMIT
    assert abs(gaps(dialplan_pages)[0] - FALLBACK_INTERVAL) <= 1.0, dialplan_pages
    [(entry_id, value)] = [(k, v) for k, v in (await astdb(box)).items() if "/" not in k]
    extension, _, epoch = value.partition("|")
    assert extension == "195"
    assert await lamp(ami) == "BUSY"

    # Back: the start-up scan adopts it; the server pages the department at its interval.
    server = await start_server(stack, "back", box, port, database_dsn, tmp_path)
    await wait_log(server, line=ADOPTED)
    alarm = await wait_alarm(store, "195", cycles=3, within=30)
    [fallback] = await events(store, alarm.id, "triggered_fallback")
    [activated] = await events(store, alarm.id, "activated")
    assert await events(store, alarm.id, "retriggered") == []
    details = fallback.details
    print(
        f"adopted {details['adopted_after']} s after the raise, after"
        f" {details['dialplan_pages']} dialplan pages; ward page gaps"
        f" {gaps(ward_phone.invite_times)}"
    )
    assert fallback.occurred_at == dt.datetime.fromtimestamp(int(epoch), dt.UTC)
    assert (details["uniqueid"], details["adopted_via"], details["outcome"]) == (
        entry_id,
        "start-up",
        "created",
    )
    assert details["instance"] == server.instance_id
    assert details["dialplan_pages"] >= 2
    assert (alarm.department_name, activated.details["uniqueid"]) == ("Fallback Ward", entry_id)
    assert await astdb(box) == {}
    assert min(gaps(ward_phone.invite_times)) >= INTERVAL * 0.9, ward_phone.invite_times
    # The handover: no dialplan page began once the server had the alarm (three of its
    # cycles, over two of the dialplan's intervals).
    assert after(fallback_phone.invite_times, activated.occurred_at) == []
    assert len(fallback_phone.invite_times) == details["dialplan_pages"]

    await deactivate(store, alarm.id)
    await ami.wait_event("DeviceStateChange", Device="Custom:PANIC", State="NOT_INUSE", within=10)
    await server.stop()


async def test_both_urls_down_the_dialplan_pages_and_a_server_on_url2_adopts(
    sandbox_factory: Callable[..., Sandbox],
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    url2_port = dead_port()
    box, _ = await fallback_box(sandbox_factory, pages=20, url2=f"agi://127.0.0.1:{url2_port}")
    ami = await stack.enter_async_context(await box.ami())
    store = Stores.over(db_pool)
    fallback_phone = await stack.enter_async_context(sipp.PagingPhone(box, 281, tmp_path))

    key = await confirm(box, tmp_path / "trigger", 196)  # in no department
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    assert (end["AGISTATUS"], end["FALLBACK"]) == ("FAILURE", "RAISED")
    log = box.log_path.read_text(errors="replace")
    assert f"127.0.0.1:{url2_port}/panic': Connection refused" in log  # URL2 was tried
    [first] = await fallback_phone.wait_invites(1)
    assert (first - key).total_seconds() <= KEY_TO_PAGE_LIMIT

    server = await start_server(stack, "url2", box, url2_port, database_dsn, tmp_path)
    await wait_log(server, line=ADOPTED)
    alarm = await wait_alarm(store, "196", within=20)
    [fallback] = await events(store, alarm.id, "triggered_fallback")
    assert (fallback.details["adopted_via"], alarm.department_name) == (
        "start-up",
        "unknown department",
    )
    assert await astdb(box) == {}
    await deactivate(store, alarm.id)
    await server.stop()


async def test_servers_on_ami_but_unreachable_over_agi_adopt_at_once_and_once(
    sandbox_factory: Callable[..., Sandbox],
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    """Two servers are up and logged in to AMI, but the dialplan's URL reaches neither
    (a wrong port, a firewall): the UserEvent makes both adopt the alarm at once, and
    there is one alarm, whose history says it once."""
    box, _ = await fallback_box(sandbox_factory, pages=20)
    store = Stores.over(db_pool)
    await seed_department(store, "Fallback Ward U", "197", ["PJSIP/283"], INTERVAL)
    fallback_phone = await stack.enter_async_context(sipp.PagingPhone(box, 280, tmp_path))
    ward_phone = await stack.enter_async_context(sipp.PagingPhone(box, 283, tmp_path))
    servers = [
        await start_server(stack, name, box, dead_port(), database_dsn, tmp_path)
        for name in ("u1", "u2")
    ]
    for server in servers:
        await wait_log(server, line="AMI connected")

    key = await confirm(box, tmp_path / "trigger", 197)
    await wait_log(*servers, line=ADOPTED)  # either of them
    alarm = await wait_alarm(store, "197", cycles=1, within=15)
    [activated] = await events(store, alarm.id, "activated")
    [fallback] = await events(store, alarm.id, "triggered_fallback")
    adopted_after = (activated.occurred_at - aware(key)).total_seconds()
    print(f"confirming key to the alarm row: {adopted_after:.3f} s (scan interval 10 s)")
    assert adopted_after < KEY_TO_PAGE_LIMIT
    assert fallback.details["adopted_via"] == "user event"
    # Three server cycles (10 s) outlast a dialplan interval (8 s): the dialplan's loop
    # stopped at its first check, or before its second page.
    await ward_phone.wait_invites(3, within=2 * INTERVAL + 5)
    assert len(fallback_phone.invite_times) <= 1, fallback_phone.invite_times
    assert [a.id for a in await store.alarms.active_alarms()] == [alarm.id]
    assert await events(store, alarm.id, "retriggered") == []
    assert await astdb(box) == {}
    # Both servers saw the event; whichever came second found the alarm adopted.
    adopted = [s.name for s in servers if ADOPTED in s.log()]
    print(f"adopted by {adopted}")
    await deactivate(store, alarm.id)
    for server in servers:
        await server.stop()


async def test_acknowledgement_reaches_url2_when_url1_is_down(
    sandbox_factory: Callable[..., Sandbox],
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    port = dead_port()
    box, _ = await fallback_box(sandbox_factory, pages=1, url2=f"agi://127.0.0.1:{port}")
    ami = await stack.enter_async_context(await box.ami())
    store = Stores.over(db_pool)
    await seed_department(store, "Fallback Ward A", "198", ["PJSIP/285"], INTERVAL)
    await stack.enter_async_context(sipp.PagingPhone(box, 285, tmp_path))
    responder = await stack.enter_async_context(sipp.Responder(box, 284, tmp_path, answers=["1"]))
    server = await start_server(
        stack,
        "url2",
        box,
        port,
        database_dsn,
        tmp_path,
        extra={"FASTAGI_EMERGENCY__DESTINATIONS": '["PJSIP/284"]'},
    )
    await wait_log(server, line="AMI connected")

    await confirm(box, tmp_path / "trigger", 198)  # served by URL2
    alarm = await wait_alarm(store, "198", within=15)
    await responder.wait("INVITE", 1, within=15)
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIEmergencyEnd", within=30)
    assert (end["AGISTATUS"], end["FASTAGI_STATUS"]) == ("SUCCESS", "ACKNOWLEDGED")
    row = await db_pool.fetchrow(
        "SELECT * FROM alarm_acknowledgements WHERE alarm_id = $1", alarm.id
    )
    assert row is not None
    assert row["acknowledged_by"] == "PJSIP/284"
    assert len(await events(store, alarm.id, "acknowledged")) == 1
    await deactivate(store, alarm.id)
    await server.stop()


async def test_deactivation_without_a_server_says_it_cannot_be_done_now(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, stack: AsyncExitStack
) -> None:
    box, _ = await fallback_box(sandbox_factory, pages=1)
    ami = await stack.enter_async_context(await box.ami())
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = await sipp.call_dtmf(box, tmp_path, service="*556", ext=150)
    call.check()
    lasted = loop.time() - started
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIDeactivateEnd", within=10)
    assert (end["AGISTATUS"], end["FASTAGI_STATUS"], end["FALLBACK"]) == (
        "FAILURE",
        "",
        "UNAVAILABLE",
    )
    # "I'm sorry. All circuits are busy now. Please try your call again later." takes
    # about 5 s; then Asterisk hangs up. Never a silent hang-up.
    print(f"*556 without a server: the call lasted {lasted:.2f} s")
    assert lasted > 3.0
    assert call.received("BYE")
    assert await astdb(box) == {}


async def test_a_server_that_fails_mid_call_leaves_the_caller_to_the_dialplan(
    sandbox: Sandbox, agi_port: int, tmp_path: Path, stack: AsyncExitStack
) -> None:
    """The server took the call and failed (FASTAGI_STATUS ERROR): the alarm may not be
    raised, so the dialplan asks again by itself (2 cancels here: nothing left behind in
    the session's sandbox)."""
    ami = await stack.enter_async_context(await sandbox.ami())

    async def failing(session: AgiSession) -> None:
        await session.set_variable("FASTAGI_STATUS", "ERROR")

    await stack.enter_async_context(AgiServer(AgiSettings(port=agi_port), {"panic": failing}))
    call = await sipp.call_dtmf(sandbox, tmp_path, service="*555", ext=199, answers=["2"])
    call.check()
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    assert (end["AGISTATUS"], end["FASTAGI_STATUS"], end["FALLBACK"]) == (
        "SUCCESS",
        "ERROR",
        "CANCELLED",
    )
    assert await astdb(sandbox) == {}


async def test_no_server_a_trunk_caller_is_refused_by_the_dialplan_too(
    sandbox: Sandbox, tmp_path: Path, stack: AsyncExitStack
) -> None:
    """An outside caller (the sandbox's trunk, caller id "101") reaches *555 while no server
    answers: refused without a word, as the server would (README "Who may raise an
    alarm"); nothing in astdb, no page. Desk phones are trusted by their endpoint."""
    ami = await stack.enter_async_context(await sandbox.ami())
    call = await sipp.call_dtmf(sandbox, tmp_path, service="*555", ext=TRUNK_ENDPOINT)
    call.check()
    end = await ami.wait_event("UserEvent", UserEvent="FastAGIPanicEnd", within=20)
    assert (end["AGISTATUS"], end["FALLBACK"]) == ("FAILURE", "REFUSED")
    assert await astdb(sandbox) == {}
