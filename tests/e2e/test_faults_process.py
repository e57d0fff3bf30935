"""Faults of the server process, with ``fastagi serve`` as a real process (configured by
``FASTAGI_*`` variables, as in production), the sandbox Asterisk, SIPp phones and
PostgreSQL: SIGKILL during an alarm, and two instances behind one Asterisk.

What is measured, from the paging phones' INVITEs and the alarm's history:

- recovery: the gap between the last page before the kill and the first one after, by
  the starts the servers recorded (``page_starts``: an INVITE comes later by Asterisk's
  dialling time, which this machine's stalls stretch);
- lost: pages that reached a phone but have no ``page_cycle`` event (INVITEs minus the
  distinct cycle numbers recorded);
- doubled, on its own and first: a cycle number recorded twice, two pages begun inside
  one cycle's window (closer together than 0.9 interval: two pages where one was due),
  or more INVITEs than cycles.

Extensions: desk phones 170-179, paging phones 250-259 (apart from other tests).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from fastagi.config import AlarmSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.store.history import StoredEvent
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.ports import free_port
from tests import sipp
from tests.e2e.server_process import (
    ServerProcess,
    events,
    gaps,
    recorded_page_starts,
    seed_department,
    server_env,
    wait_alarm,
    wait_counted,
)
from tests.history import doubled_cycles, doubled_pages, page_starts, sent_cycles

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

INTERVAL = 5
# A gap shorter than this is a doubled cycle. Gaps are taken between the pages that were
# sent (``sent=True``): a server that takes an alarm over before its AMI login records a
# page it could not send, and sends the next as soon as AMI is up, by design
# (fastagi/alarms/loop.py); in a fresh clone's run (2026-11-29) that put 0.26 s between
# the unsent page and the next.
MIN_GAP = INTERVAL * 0.9
# How far a page may stray from its schedule, start to start, by the starts the servers
# recorded (page_starts: the phone's INVITEs add Asterisk's dialling time, which a
# loaded machine stretched by 0.57 s in a fresh clone's run, 2026-11-29, and a doubled
# cycle's check of 4.5 s failed at 4.43 s). The bug this guards (a cycle counted when
# its page ends, so a resumed page comes one interval after the page ENDED, commit
# 300a135) adds a page's length, about 2.5 s here, which each test checks is more than
# twice this tolerance.
SCHEDULE_TOLERANCE = 0.8


async def start_server(
    stack: AsyncExitStack,
    name: str,
    sandbox: Sandbox,
    port: int,
    dsn: str,
    tmp_path: Path,
    extra: dict[str, str] | None = None,
) -> ServerProcess:
    env = server_env(sandbox, port, dsn, extra=extra)
    server = ServerProcess(name, env, tmp_path / f"{name}.log")
    stack.push_async_callback(server.kill)
    await server.start()
    return server


async def panic_call(sandbox: Sandbox, workdir: Path, ext: int) -> None:
    result = await sipp.call_dtmf(
        sandbox,
        workdir,
        service="*555",
        ext=ext,
        answers=["1"],
    )
    result.check()


async def deactivate(store: Stores, alarm: Alarm) -> None:
    """As the CLI does: written to the database, the leader hears the NOTIFY."""
    event = HistoryEvent(EventKind.DEACTIVATED, alarm.id, alarm.extension, alarm.department_name)
    assert await store.alarms.deactivate(alarm.id, "test", "done", event) is not None


async def assert_history_matches_pages(
    store: Stores, alarm_id: int, invites: list[dt.datetime]
) -> None:
    """One page_cycle row per page the phone received, numbered 1..n.

    Doubled is checked first and on its own (a contiguity check before it would stop
    the test before a doubled cycle could be counted): a cycle number recorded twice,
    or a page begun inside the window of the cycle before it. Then lost (more INVITEs
    than cycles is a doubled page too), then the numbers.
    """
    cycles = await events(store, alarm_id, "page_cycle")
    numbers = [e.details["cycle"] for e in cycles]
    twice = doubled_cycles(numbers)
    # A page never sent (a new leader before its AMI login) opens no window.
    sent = sent_cycles(cycles)
    starts = page_starts(sent)
    close = doubled_pages(starts, MIN_GAP)
    lost = len(invites) - len(sent)
    print(
        f"cycles recorded {numbers} ({len(cycles) - len(sent)} never sent), pages received"
        f" {len(invites)}: lost {lost}, doubled {twice} (cycle numbers) {close} (gaps <"
        f" {MIN_GAP} s)"
    )
    assert twice == [], f"cycle numbers recorded twice: {twice} in {numbers}"
    assert close == [], f"two pages in one cycle window: gaps {gaps(starts)}"
    assert lost == 0, f"{lost} pages received without their page_cycle: {numbers}"
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), numbers


def assert_resumed_on_schedule(
    resumed_gap: float, page_started: dt.datetime, resumed: StoredEvent
) -> None:
    """The page after a takeover comes one interval after the interrupted (or last) page
    BEGAN, start to start, within the tolerance; or at once, if the new leader took the
    alarm only after that moment (then it cannot be on time, and must not wait more)."""
    taken_after = resumed.occurred_at.timestamp() - page_started.timestamp()
    due = max(INTERVAL, taken_after)
    print(
        f"resumed gap {resumed_gap:.3f} s; taken over {taken_after:.2f} s after that page"
        f" began (first page in {resumed.details['first_page_in']} s); due {due:.2f} s"
    )
    assert abs(resumed_gap - due) <= SCHEDULE_TOLERANCE, (resumed_gap, due)


async def test_sigkill_between_pages_restarted_server_resumes_the_loop(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    store = Stores.over(db_pool)
    await seed_department(store, "Fault Ward K", "170", ["PJSIP/250"], INTERVAL)
    phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 250, tmp_path))
    first = await start_server(stack, "first", sandbox, agi_port, database_dsn, tmp_path)
    print(f"first server listening {first.ready_after:.2f} s after spawn")

    await panic_call(sandbox, tmp_path / "trigger", 170)
    alarm = await wait_alarm(store, "170", cycles=2, within=20)
    # Cycle 2 is recorded: the kill falls between two pages.
    assert len(phone.invite_times) == 2
    killed_at = time.time()
    await first.kill()

    second = await start_server(stack, "second", sandbox, agi_port, database_dsn, tmp_path)
    print(f"second server listening {second.ready_after:.2f} s after spawn")
    await phone.wait_invites(4, within=20)
    starts = await recorded_page_starts(store, alarm.id, 4, sent=True)
    all_gaps = gaps(starts)
    resumed_gap = all_gaps[1]
    recovery = starts[2].timestamp() - killed_at
    last_duration = (await events(store, alarm.id, "page_cycle"))[-1].details["duration"]
    print(
        f"gaps {all_gaps}; kill to next page {recovery:.2f} s; last page before the kill"
        f" lasted {last_duration} s"
    )
    assert min(all_gaps) >= MIN_GAP, all_gaps
    # The test can tell the bug (a page's length late) from jitter.
    assert float(last_duration) > 2 * SCHEDULE_TOLERANCE, last_duration
    resumed = await events(store, alarm.id, "resumed")
    assert [e.details["instance"] for e in resumed] == [second.instance_id]
    # One interval after the last page began (start to start), not after it ended.
    assert_resumed_on_schedule(resumed_gap, starts[1], resumed[0])
    await deactivate(store, alarm)
    await second.stop()
    await assert_history_matches_pages(store, alarm.id, phone.invite_times)
    assert len(await events(store, alarm.id, "activated")) == 1


async def test_sigkill_during_a_page_no_cycle_doubled(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    """The kill falls while a page plays: Asterisk finishes that page on its own, and
    the next server must not page again before one interval has passed since it began."""
    store = Stores.over(db_pool)
    await seed_department(store, "Fault Ward L", "172", ["PJSIP/252"], INTERVAL)
    phone = await stack.enter_async_context(sipp.PagingPhone(sandbox, 252, tmp_path))
    first = await start_server(stack, "first", sandbox, agi_port, database_dsn, tmp_path)
    await panic_call(sandbox, tmp_path / "trigger", 172)
    alarm = await wait_alarm(store, "172", cycles=1, within=20)
    await phone.wait_invites(2, within=10)  # cycle 2 is playing
    # ... and is counted on the alarm row: the leader commits that right after sending
    # the page's Originate, while the INVITE is on its way. A kill before that commit is
    # another case, a known limit (docs/reliability.md): under load, the INVITE reached
    # the phone first in 1 run of 5 on 2026-11-27, and the next leader paged again 1.3 s
    # later.
    await wait_counted(store, alarm.id, 2, within=5)
    assert len(phone.received("BYE")) < 2, "page 2 ended before the kill"
    killed_at = time.time()
    await first.kill()
    second = await start_server(stack, "second", sandbox, agi_port, database_dsn, tmp_path)
    await phone.wait_invites(4, within=25)
    starts = await recorded_page_starts(store, alarm.id, 4, sent=True)
    all_gaps = gaps(starts)
    print(
        f"gaps {all_gaps}; interrupted page to the next {all_gaps[1]:.2f} s (interval"
        f" {INTERVAL} s); kill to next page {starts[2].timestamp() - killed_at:.2f} s"
    )
    assert min(all_gaps) >= MIN_GAP, all_gaps
    [alarm] = await store.alarms.active_alarms()
    resumed = await events(store, alarm.id, "resumed")
    assert [e.details["instance"] for e in resumed] == [second.instance_id]
    first_duration = (await events(store, alarm.id, "page_cycle"))[0].details["duration"]
    assert float(first_duration) > 2 * SCHEDULE_TOLERANCE, first_duration
    # One interval after the interrupted page began.
    assert_resumed_on_schedule(all_gaps[1], starts[1], resumed[0])
    await deactivate(store, alarm)
    await second.stop()
    # The page the kill interrupted is recorded too (once), its outcome unknown.
    await assert_history_matches_pages(store, alarm.id, phone.invite_times)
    cycles = await events(store, alarm.id, "page_cycle")
    interrupted = cycles[1].details
    assert interrupted["error"] == "leader lost during the page; outcome unknown", interrupted
    assert interrupted["instance"] == second.instance_id


# The takeover scan's period: the process tests' 1 s, and the default (3 s).
TAKEOVER_INTERVALS = [1.0, AlarmSettings().takeover_interval]
# What a scan round adds to its period: the sleep is takeover_interval, then the round
# runs (a few queries). Measured on 2026-11-27: the kill to the alarm taken over took at
# most takeover_interval + 0.1 s; five times that margin.
SCAN_MARGIN = 0.5


@pytest.mark.parametrize(
    "takeover_interval", TAKEOVER_INTERVALS, ids=lambda t: f"takeover-every-{t:g}s"
)
async def test_two_instances_failover_one_leader_and_takeover(
    sandbox_factory,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
    stack: AsyncExitStack,
    takeover_interval: float,
) -> None:
    """The takeover is the scan's alone: after the leader dies nothing triggers the alarm
    again, yet the survivor takes it over within ``takeover_interval`` (+ a scan's
    margin) and pages one interval after the last page began, or at once if it took the
    alarm later than that. So the gap at a takeover is at most
    ``max(interval, kill_offset + takeover_interval + margin)`` (``kill_offset``: the
    kill's distance from the last page's start), and never more than
    ``interval + takeover_interval + margin``."""
    timing = {"FASTAGI_ALARM__TAKEOVER_INTERVAL": f"{takeover_interval:g}"}
    port_a, port_b = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    while port_b == port_a:
        port_b = free_port(socket.SOCK_STREAM)
    box: Sandbox = sandbox_factory(f"agi://127.0.0.1:{port_a}")
    # FreePBX: a line in globals_custom.conf; here set at run time.
    await box.acli(f"dialplan set global FASTAGI_PANIC_URL2 agi://127.0.0.1:{port_b}")
    store = Stores.over(db_pool)
    await seed_department(store, "Fault Ward T", "171", ["PJSIP/251"], INTERVAL)
    phone = await stack.enter_async_context(sipp.PagingPhone(box, 251, tmp_path))

    # A (the first URL) is down: the panic call is served by B, the second URL.
    b = await start_server(stack, "b", box, port_b, database_dsn, tmp_path, timing)
    await panic_call(box, tmp_path / "trigger-a-down", 171)
    alarm = await wait_alarm(store, "171", cycles=1, within=20)
    [activated] = await events(store, alarm.id, "activated")
    assert activated.details["instance"] == b.instance_id

    # Both up: exactly one of them pages (one INVITE per cycle, at the interval).
    a = await start_server(stack, "a", box, port_a, database_dsn, tmp_path, timing)
    alarm = await wait_alarm(store, "171", cycles=3, within=20)
    # A cycle is counted once Asterisk has sent its INVITEs; the phone logs each a
    # moment later.
    await phone.wait_invites(3)
    assert len(phone.invite_times) == 3, phone.invite_times
    starts = await recorded_page_starts(store, alarm.id, 3, sent=True)
    assert min(gaps(starts)) >= MIN_GAP, gaps(starts)
    assert await events(store, alarm.id, "resumed") == []

    # The leader dies between pages (page 3 has ended: its event is written). Nothing
    # else happens: no call, no CLI; only A's takeover scan can page again.
    killed_at = time.time()
    await b.kill()
    within = INTERVAL + takeover_interval + 10
    try:
        await phone.wait_invites(4, within=within)
    except TimeoutError:
        pytest.fail(f"no page within {within:g} s of the leader's death: no takeover")
    starts = await recorded_page_starts(store, alarm.id, 4, sent=True)
    all_gaps = gaps(starts)
    takeover_gap = all_gaps[2]
    [resumed] = await events(store, alarm.id, "resumed")
    assert resumed.details["instance"] == a.instance_id
    taken_in = resumed.occurred_at.timestamp() - killed_at
    kill_offset = killed_at - starts[2].timestamp()
    limit = max(INTERVAL, kill_offset + takeover_interval + SCAN_MARGIN) + SCHEDULE_TOLERANCE
    print(
        f"takeover every {takeover_interval:g} s: gaps {all_gaps}; killed {kill_offset:.2f} s"
        f" after page 3 began; taken over {taken_in:.2f} s after the kill; takeover gap"
        f" {takeover_gap:.3f} s (limit {limit:.2f} s); kill to next page"
        f" {starts[3].timestamp() - killed_at:.2f} s"
    )
    # Taken over by the scan, within one scan period of the kill.
    assert 0 < taken_in <= takeover_interval + SCAN_MARGIN, taken_in
    assert await events(store, alarm.id, "retriggered") == []
    assert min(all_gaps) >= MIN_GAP, all_gaps
    assert takeover_gap <= limit, (takeover_gap, limit)
    assert_resumed_on_schedule(takeover_gap, starts[2], resumed)

    # B is down: calls reach A through the first URL; a trigger joins A's alarm, and A
    # still pages it alone.
    await panic_call(box, tmp_path / "trigger-b-down", 171)
    [retriggered] = await events(store, alarm.id, "retriggered")
    assert retriggered.details["instance"] == a.instance_id
    await phone.wait_invites(5, within=INTERVAL + 5)
    starts = await recorded_page_starts(store, alarm.id, 5, sent=True)
    assert min(gaps(starts)) >= MIN_GAP, gaps(starts)

    await deactivate(store, alarm)
    await a.stop()
    await assert_history_matches_pages(store, alarm.id, phone.invite_times)
