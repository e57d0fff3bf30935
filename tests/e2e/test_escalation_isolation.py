"""Escalation never delays paging: with the SMTP server wedged (it accepts connections
and never answers) and the SMS gateway down, an alarm's page cycles keep their interval,
asserted from the INVITE times the SIPp paging phones saw."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from fastagi.app import running_services
from fastagi.config.notify import (
    NotifySettings,
    RetrySettings,
    SmtpSettings,
    WebhookSettings,
)
from fastagi.store import Stores
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.sipp import PagingPhone
from tests.e2e.test_demo import settings_for
from tests.notify_servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Longer than one page (lead-in, ringing, a ~5 s announcement): cycles never overlap, so
# a shorter interval would measure the page's length, not the schedule.
INTERVAL = 10
PHONES = (231, 232)
CYCLES = 3


@pytest.fixture
async def wedged_smtp_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_cycles_keep_their_interval_while_smtp_and_sms_are_down(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool,
    wedged_smtp_port: int,
    tmp_path: Path,
) -> None:
    store = Stores.over(db_pool)
    await store.directory.add_paging_group("Isolation")
    for ext in PHONES:
        await store.directory.add_paging_device("Isolation", f"PJSIP/{ext}")
    await store.directory.add_department(
        "Isolation Ward", interval_seconds=INTERVAL, paging_group="Isolation"
    )
    await store.directory.map_extensions("Isolation Ward", "171")
    notify = NotifySettings(
        smtp=SmtpSettings(host="127.0.0.1", port=wedged_smtp_port, security="none", timeout=30),
        webhook=WebhookSettings(url=SecretStr(f"http://127.0.0.1:{free_port()}/sms")),
        emails=["security@hospital.example"],
        sms=["+491701234567"],
        retry=RetrySettings(attempts=50, initial_backoff=0.05, max_backoff=0.2),
    )
    settings = settings_for(sandbox, agi_port, database_dsn, notify)
    settings.alarm.lead_in = 0.2

    phones = [PagingPhone(sandbox, ext, tmp_path / f"phone-{ext}") for ext in PHONES]
    async with phones[0], phones[1], running_services(settings) as services:
        department = await services.alarms.lookup("171")
        assert department is not None
        # SIPp logs local wall-clock time.
        activated_at = datetime.now()
        activation = await services.alarms.activate("171", department, uniqueid="isolation-1")
        for phone in phones:
            await phone.wait_invites(CYCLES, within=INTERVAL * CYCLES + 15)
        assert services.notifier.pending > 0  # the deliveries are still stuck
        await services.alarms.deactivate(activation.alarm.id, by="test", reason="done")

    for phone in phones:
        times = phone.invite_times[:CYCLES]
        # The first page is not held up behind the e-mail and SMS of the activation.
        assert (times[0] - activated_at).total_seconds() < 2.0
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert all(abs(gap - INTERVAL) <= 0.1 * INTERVAL for gap in gaps), gaps
