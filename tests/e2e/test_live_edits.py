"""Administrative changes and deactivations reach every running server at once: real
AlarmService instances, real PostgreSQL, the sandbox Asterisk, SIPp paging phones, and
the admin functions the ``fastagi`` CLI runs (``fastagi.cli.main``, or the same
``fastagi.admin`` call on a pool of its own, as the command does).

What is measured (printed for docs/reliability.md):

- edit-to-live: from an edit's ``config_changed`` event (written in the transaction that
  sends ``NOTIFY fastagi_config``) to each server's directory answering with it;
- deactivations placed while a page plays, when the next one is due, and when it has
  just been originated, from a call (the service) and from the CLI: INVITEs the paging
  phones received after the deactivation took effect (``alarms.deactivated_at``, stamped
  once the page lock was had; both clocks are this machine's wall clock), and how long
  after it the legs in flight were hung up (the phones' BYE or CANCEL).

Extensions: desk phones 160-169, paging phones 236-239 (apart from other tests).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import pytest

from fastagi import cli
from fastagi.admin.alarms import deactivate_alarm
from fastagi.alarms.service import AlarmService
from fastagi.ami import AmiClient
from fastagi.config import AlarmSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import Directory
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.alarm_stack import open_pool, sandbox_ami, sandbox_tts, start_alarm_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SETTINGS = AlarmSettings(lead_in=0.3, page_timeout=5, takeover_interval=1.0)
LIVE_WITHIN = 1.0  # seconds from an edit (or a deactivation) to every server acting on it


class Ended:
    """An AlarmListener that notes the alarms whose end it was told."""

    def __init__(self) -> None:
        self.ended: asyncio.Queue[Alarm] = asyncio.Queue()

    async def alarm_started(self, alarm: Alarm) -> None:
        pass

    async def alarm_ended(self, alarm: Alarm) -> None:
        self.ended.put_nowait(alarm)

    async def drill_paged(self, alarm: Alarm) -> None:
        pass


class Servers:
    """Real AlarmService instances on the test's loop, closed by the test's stack."""

    def __init__(self, sandbox: Sandbox, dsn: str, tmp_path: Path, stack: AsyncExitStack):
        self.sandbox = sandbox
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.stack = stack

    async def stores(self) -> Stores:
        return Stores.over(await open_pool(self.stack, self.dsn))

    async def ami(self) -> AmiClient:
        return await sandbox_ami(self.stack, self.sandbox)

    async def service(
        self, name: str, settings: AlarmSettings = SETTINGS, listener: Ended | None = None
    ) -> AlarmService:
        pool = await open_pool(self.stack, self.dsn)
        store = Stores.over(pool)
        ami = await self.ami()
        tts = sandbox_tts(self.stack, self.sandbox)
        service, _ = await start_alarm_service(
            self.stack,
            store=store,
            pool=pool,
            ami=ami,
            tts=tts,
            settings=settings,
            name=name,
            listeners=[listener] if listener else [],
        )
        return service

    async def phone(self, ext: int) -> sipp.PagingPhone:
        return await self.stack.enter_async_context(
            sipp.PagingPhone(self.sandbox, ext, self.tmp_path)
        )


@pytest.fixture
async def servers(sandbox: Sandbox, database_dsn: str, tmp_path: Path) -> AsyncIterator[Servers]:
    async with AsyncExitStack() as stack:
        yield Servers(sandbox, database_dsn, tmp_path, stack)


async def fastagi(dsn: str, *argv: str) -> None:
    """``fastagi <argv> --dsn <dsn>`` as the command runs it (its own loop and pool)."""
    code = await asyncio.to_thread(cli.main, [*argv, "--dsn", dsn])
    assert code == 0, argv


async def change_time(store: Stores, action: str, **details: object) -> datetime:
    """When the config_changed event of ``action`` with ``details`` was recorded."""
    rows = await store.history.history(datetime.fromtimestamp(0).astimezone(), now())
    matching = [
        e
        for e in rows
        if e.kind == "config_changed"
        and e.details.get("action") == action
        and all(e.details.get(k) == v for k, v in details.items())
    ]
    assert len(matching) == 1, matching
    return matching[0].occurred_at


def now() -> datetime:
    return datetime.now().astimezone()


async def live_at(service: AlarmService, live: object) -> float:
    """The wall-clock time at which ``service``'s directory first satisfied ``live``."""
    await service.wait_directory(live)  # type: ignore[arg-type]
    return time.time()


def belongs(extension: str, name: str) -> object:
    def check(directory: Directory) -> bool:
        department = directory.department_for(extension)
        return department is not None and department.name == name

    return check


async def test_cli_edits_are_live_on_every_server_within_a_second(
    servers: Servers, database_dsn: str
) -> None:
    store = await servers.stores()
    # The periodic reload is a minute away: only the NOTIFY can make an edit live now.
    one, two = await servers.service("one"), await servers.service("two")
    assert await one.lookup("160") is None

    delays: list[float] = []

    async def measured(action: str, details: dict[str, object], live: object, *argv: str):
        waiters = [asyncio.create_task(live_at(s, live)) for s in (one, two)]
        await fastagi(database_dsn, *argv)
        async with asyncio.timeout(5):
            seen = await asyncio.gather(*waiters)
        edited = (await change_time(store, action, **details)).timestamp()
        delays.extend(at - edited for at in seen)

    for n in range(5):
        name, extension = f"Live Ward {n}", f"16{n}"
        await fastagi(database_dsn, "department", "add", name)
        await measured(
            "extension map",
            {"department": name, "pattern": extension},
            belongs(extension, name),
            "extension",
            "map",
            name,
            extension,
        )

    def interval_is(seconds: int) -> object:
        def check(directory: Directory) -> bool:
            department = directory.department_for("160")
            return department is not None and directory.interval_for(department) == seconds

        return check

    await measured(
        "department set",
        {"name": "Live Ward 0", "interval_seconds": 8},
        interval_is(8),
        "department",
        "set",
        "Live Ward 0",
        "--interval",
        "8",
    )
    await fastagi(database_dsn, "paging-group", "add", "Live Group")
    await fastagi(database_dsn, "department", "set", "Live Ward 0", "--paging-group", "Live Group")

    def pages(device: str) -> object:
        def check(directory: Directory) -> bool:
            department = directory.department_for("160")
            return department is not None and device in department.devices

        return check

    await measured(
        "paging-group device add",
        {"group": "Live Group", "device": "PJSIP/236"},
        pages("PJSIP/236"),
        "paging-group",
        "device",
        "add",
        "Live Group",
        "PJSIP/236",
    )
    print(
        f"edit-to-live over {len(delays)} (edit, server) pairs: median "
        f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )
    assert max(delays) < LIVE_WITHIN, delays

    # A trigger from 160 now: the panic flow's lookup, then the alarm it raises.
    ward = await two.lookup("160")
    assert ward is not None
    assert (ward.name, ward.devices) == ("Live Ward 0", ("PJSIP/236",))
    phone = await servers.phone(236)
    activation = await two.activate("160", ward, uniqueid="live-1")
    assert activation.alarm.department_name == "Live Ward 0"
    await phone.wait_invites(1)
    assert await two.deactivate(activation.alarm.id, by="test", reason="done")


# -- deactivation: the CLI's and the phone's, placed around a cycle start ----------------

INTERVAL = 5
# Lead-in plus the announcement last longer than the interval: pages run back to back,
# as with a 6 s interval and a 6.7 s announcement.
BACK_TO_BACK = SETTINGS.model_copy(
    update={"lead_in": 5.0, "announcement": "Panic {department}.", "takeover_interval": 30.0}
)
PHONES = (237, 238, 239)


class PageWatch:
    """The AMI events of the pages: when each page's ;1 half appeared and hung up, keyed
    by (alarm id, cycle number)."""

    def __init__(self, ami: AmiClient) -> None:
        self._stream = ami.events("Newchannel", "Hangup")
        self.started: dict[tuple[int, int], asyncio.Event] = {}
        self.ended: dict[tuple[int, int], asyncio.Event] = {}
        self._task = asyncio.create_task(self._run())

    @staticmethod
    def _event(table: dict[tuple[int, int], asyncio.Event], key: tuple[int, int]) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())

    async def _run(self) -> None:
        async for event in self._stream:
            linked = event.get("Linkedid", "")
            if event.get("Uniqueid") != linked or not linked.startswith("panic-"):
                continue  # not the ;1 half of a page
            _, alarm_id, cycle, _ = linked.split("-")
            key = (int(alarm_id), int(cycle))
            if event.event == "Newchannel":
                self._event(self.started, key).set()
            elif event.event == "Hangup":
                self._event(self.ended, key).set()

    async def start_of(self, alarm_id: int, cycle: int) -> None:
        await asyncio.wait_for(self._event(self.started, (alarm_id, cycle)).wait(), INTERVAL * 3)

    async def end_of(self, alarm_id: int, cycle: int) -> None:
        await asyncio.wait_for(self._event(self.ended, (alarm_id, cycle)).wait(), INTERVAL * 3)

    async def close(self) -> None:
        self._stream.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def place(watch: PageWatch, alarm_id: int, placement: str) -> None:
    """Wait for the moment of ``placement`` in the alarm's second cycle."""
    await watch.start_of(alarm_id, 1)
    if placement == "during":  # the first page plays
        await asyncio.sleep(2.0)
    elif placement == "due":  # the first page ended: the second is due now
        await watch.end_of(alarm_id, 1)
    elif placement == "originated":  # the second page's Originate was just written
        await watch.start_of(alarm_id, 2)
    else:
        raise AssertionError(placement)


async def hangups(phone: sipp.PagingPhone, within: float = 5.0) -> list[datetime]:
    """Wait until each INVITE the phone received has its BYE or CANCEL; their times."""
    return await phone.wait(("BYE ", "CANCEL "), len(phone.invite_times), within=within)


async def until_stopped(service: AlarmService, alarm_id: int) -> None:
    async with asyncio.timeout(10):
        while service.leads(alarm_id):  # noqa: ASYNC110 (no event for it: a loop's end)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("path", ["phone", "cli"])
async def test_no_page_after_a_deactivation_and_the_page_in_flight_hung_up(
    servers: Servers, path: str
) -> None:
    store = await servers.stores()
    cli_store = await servers.stores()  # the CLI's own pool, as the command has
    await store.directory.add_paging_group("Stop Group")
    for ext in PHONES:
        await store.directory.add_paging_device("Stop Group", f"PJSIP/{ext}")
    await store.directory.add_department(
        "Stop Ward", interval_seconds=INTERVAL, paging_group="Stop Group"
    )
    await store.directory.map_extensions("Stop Ward", "161")
    phones = [await servers.phone(ext) for ext in PHONES]
    service = await servers.service("stop", BACK_TO_BACK)
    watch = PageWatch(await servers.ami())
    servers.stack.push_async_callback(watch.close)
    ward = await service.lookup("161")

    results = []
    for placement in ("during", "due", "originated") * 2:
        before = [len(p.invite_times) for p in phones]
        alarm = (await service.activate("161", ward, uniqueid=f"stop-{placement}")).alarm
        await place(watch, alarm.id, placement)
        if path == "phone":  # what the deactivation flow does once the PIN is right
            assert await service.deactivate(alarm.id, by="extension 109", reason="PIN")
        else:  # what `fastagi alarm deactivate` does
            await deactivate_alarm(cli_store, alarm.id, reason="test", by="cli:test")
        row = await store.alarms.get_alarm(alarm.id)
        assert row is not None
        assert row.deactivated_at is not None
        stopped = row.deactivated_at.timestamp()
        ends = [await hangups(p) for p in phones]
        await until_stopped(service, alarm.id)
        final = await store.alarms.get_alarm(alarm.id)
        assert final is not None
        assert final.last_cycle_at is not None
        assert final.deactivated_at is not None
        invites = [t.timestamp() for p in phones for t in p.invite_times]
        late = [t - stopped for t in invites if t > stopped]
        hung_up = max(t.timestamp() for times in ends for t in times) - stopped
        results.append((placement, len(late), hung_up))
        print(
            f"{path} {placement}: INVITEs logged after the deactivation {len(late)}"
            f" ({', '.join(f'{t * 1000:+.0f} ms' for t in late)}),"
            f" last leg hung up {hung_up * 1000:+.0f} ms after it"
        )
        # No page started after the stop: the last one's Originate was sent before the
        # row changed (the page holds the row from before its Originate until Asterisk
        # reports its devices dialled) ...
        assert final.last_cycle_at < final.deactivated_at, (placement, final)
        # ... and every INVITE a phone got belongs to a page counted then. An INVITE of
        # the page in flight may still be logged a few ms after the row changed:
        # Asterisk reports DialBegin once ast_call() returns, and chan_pjsip sends the
        # INVITE from its serializer after that (chan_pjsip.c chan_pjsip_call pushes
        # call()), and SIPp stamps a message when it reads it. That page is hung up.
        new = [len(p.invite_times) - n for p, n in zip(phones, before, strict=True)]
        assert new == [final.cycles] * len(phones), (placement, new, final.cycles)
        assert all(t < LIVE_WITHIN for t in late), (placement, late)
        assert hung_up < LIVE_WITHIN, (placement, hung_up)
    assert len(results) == 6


async def test_cli_deactivation_is_the_phones_path(
    servers: Servers, database_dsn: str, sandbox: Sandbox
) -> None:
    """``fastagi alarm deactivate`` as a command: the leader hangs up the page in flight,
    the lamps go out, the listeners are told, the history names the CLI user."""
    store = await servers.stores()
    await store.directory.add_paging_group("CLI Group")
    await store.directory.add_paging_device("CLI Group", "PJSIP/237")
    await store.directory.add_department(
        "CLI Ward", interval_seconds=INTERVAL, paging_group="CLI Group"
    )
    await store.directory.map_extensions("CLI Ward", "162")
    phone = await servers.phone(237)
    ended = Ended()
    service = await servers.service("leader", BACK_TO_BACK, ended)
    ami = await servers.ami()
    alarm = (await service.activate("162", await service.lookup("162"), uniqueid="c")).alarm
    await phone.wait_invites(1)
    assert await ami.get_device_state("Custom:PANIC") == "BUSY"

    launched = time.time()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastagi",
        "alarm",
        "deactivate",
        str(alarm.id),
        "--reason",
        "drill over",
        "--dsn",
        database_dsn,
        env={k: v for k, v in os.environ.items() if not k.startswith("FASTAGI_")},
    )
    assert await process.wait() == 0
    row = await store.alarms.get_alarm(alarm.id)
    assert row is not None
    assert row.deactivated_at is not None
    stopped = row.deactivated_at.timestamp()
    [bye] = await hangups(phone)
    print(
        f"CLI launched to deactivation {stopped - launched:.2f} s; "
        f"to the page hung up {bye.timestamp() - launched:.2f} s"
    )
    assert bye.timestamp() - stopped < LIVE_WITHIN
    async with asyncio.timeout(5):
        told = await ended.ended.get()
    assert told.id == alarm.id
    await until_stopped(service, alarm.id)
    assert await ami.get_device_state("Custom:PANIC") == "NOT_INUSE"
    [event] = [e for e in await store.history.timeline(alarm.id) if e.kind == "deactivated"]
    assert event.details["by"] == f"cli:{getpass.getuser()}"
    assert event.occurred_at == row.deactivated_at
    assert [t for t in phone.invite_times if t.timestamp() > stopped] == []
