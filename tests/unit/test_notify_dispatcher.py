"""The notifier's queueing, isolation, limits and shutdown, against real servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from fastagi.domain.events import HistoryEvent
from fastagi.notify import (
    Notifier,
    NotifySettings,
    Recipients,
    RetrySettings,
    SmtpSettings,
    WebhookSettings,
)
from tests.notify_servers import History, SmtpServer, WebhookServer, free_port

pytestmark = pytest.mark.timeout(30)

ACTIVATED = datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)
FAST = RetrySettings(attempts=20, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def blackhole() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (a wedged server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def settings(smtp_port: int, **changes: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "smtp": SmtpSettings(host="127.0.0.1", port=smtp_port, security="none", timeout=5),
        "emails": ["er@hospital.example"],
        "retry": FAST,
    }
    values.update(changes)
    return NotifySettings(**values)


async def activate(notifier: Notifier, department: str = "Notaufnahme Süd") -> int:
    return await notifier.notify(
        "activated", alarm_id=7, department=department, extension="201", activated_at=ACTIVATED
    )


async def test_a_wedged_smtp_server_does_not_hold_up_the_sms(
    blackhole: int, gateway: WebhookServer
) -> None:
    history = History()
    notifier = Notifier(
        settings(
            blackhole,
            smtp=SmtpSettings(host="127.0.0.1", port=blackhole, security="none", timeout=10),
            webhook=WebhookSettings(url=SecretStr(gateway.url("/sms")), timeout=5),
            sms=["+491701234567"],
        ),
        history.record,
    )
    assert await activate(notifier) == 2
    # Queued, not sent: nothing reached the gateway, nothing was recorded, both pending.
    assert (gateway.requests, history.events, notifier.pending) == ([], [], 2)
    await history.wait_for(1, channel="webhook", outcome="sent")
    # The e-mail is still waiting for the server's greeting.
    assert history.details(channel="email") == []
    assert notifier.pending == 1
    await notifier.close(drain_timeout=0.1)
    assert len(gateway.requests) == 1
    (abandoned,) = history.details(channel="email")
    assert abandoned["outcome"] == "abandoned"
    assert abandoned["answer"] == "shutting down"
    assert history.events[-1].kind == "notification_failed"


async def test_department_recipients_replace_the_default(smtp: SmtpServer) -> None:
    history = History()
    notifier = Notifier(
        settings(
            smtp.port,
            emails=["all@hospital.example"],
            departments={
                "Notaufnahme Süd": Recipients(
                    emails=["er@hospital.example", "er2@hospital.example"]
                ),
                "Lab": Recipients(emails=[]),
            },
        ),
        history.record,
    )
    assert await activate(notifier) == 2
    assert await activate(notifier, department="Lab") == 0
    assert await activate(notifier, department="Radiology") == 1
    await history.wait_for(3, outcome="sent")
    await notifier.close()
    assert sorted(mail.rcpt_tos[0] for mail in smtp.inbox.mails) == [
        "all@hospital.example",
        "er2@hospital.example",
        "er@hospital.example",
    ]


async def test_beyond_max_pending_deliveries_are_dropped_and_recorded() -> None:
    history = History()
    notifier = Notifier(
        settings(
            free_port(),
            emails=["a@hospital.example", "b@hospital.example", "c@hospital.example"],
            max_pending=2,
        ),
        history.record,
    )
    assert await activate(notifier) == 2
    await history.wait_for(1, outcome="dropped")
    await notifier.close(drain_timeout=5)
    (dropped,) = history.details(outcome="dropped")
    assert dropped["recipient"] == "c@hospital.example"
    assert dropped["answer"] == "queue full"


async def test_close_cuts_the_backoff_short_for_one_last_attempt(smtp: SmtpServer) -> None:
    smtp.inbox.replies.append("421 4.3.2 Service shutting down")
    history = History()
    slow = RetrySettings(attempts=5, initial_backoff=60, max_backoff=60)
    notifier = Notifier(settings(smtp.port, retry=slow), history.record)
    await activate(notifier)
    await history.wait_for(1, outcome="retrying")
    await notifier.close(drain_timeout=5)
    assert [(d["attempt"], d["outcome"]) for d in history.details()] == [
        (1, "retrying"),
        (2, "sent"),
    ]
    assert len(smtp.inbox.mails) == 1


async def test_closed_notifier_sends_nothing(smtp: SmtpServer) -> None:
    history = History()
    notifier = Notifier(settings(smtp.port), history.record)
    await notifier.close()
    assert await activate(notifier) == 0
    assert history.events == []


async def test_only_the_chosen_events_are_sent(smtp: SmtpServer) -> None:
    history = History()
    notifier = Notifier(settings(smtp.port, events=["deactivated"]), history.record)
    assert await activate(notifier) == 0
    await notifier.close()
    assert smtp.inbox.mails == []


async def test_notify_never_raises(smtp: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(settings(smtp.port), History().record)
    naive = datetime(2024, 5, 1, 10, 15)
    queued = await notifier.notify(
        "activated", alarm_id=7, department="x", extension="201", activated_at=naive
    )
    await notifier.close()
    assert queued == 0
    assert "cannot queue the activated notification of alarm 7" in caplog.text


async def test_a_failing_history_does_not_stop_deliveries(
    smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    delivered = asyncio.Event()

    async def broken_record(event: HistoryEvent) -> None:
        delivered.set()
        raise RuntimeError("database down")

    notifier = Notifier(settings(smtp.port), broken_record)
    await activate(notifier)
    async with asyncio.timeout(10):
        await delivered.wait()
    await notifier.close()
    assert len(smtp.inbox.mails) == 1
    assert "cannot record the notification_sent event" in caplog.text


async def test_order_is_kept_per_recipient(smtp: SmtpServer) -> None:
    # The first message is refused once; the second must not overtake it.
    smtp.inbox.replies.append("451 4.3.0 Try again later")
    history = History()
    notifier = Notifier(settings(smtp.port), history.record)
    await activate(notifier)
    await notifier.notify(
        "deactivated",
        alarm_id=7,
        department="Notaufnahme Süd",
        extension="201",
        activated_at=ACTIVATED,
        by="305",
    )
    await history.wait_for(2, outcome="sent")
    await notifier.close()
    subjects = [mail.message["Subject"].split(":")[0] for mail in smtp.inbox.mails]
    assert subjects == ["PANIC ALARM", "Alarm ended"]


def test_the_settings_nest_into_toml_shaped_data() -> None:
    settings = NotifySettings.model_validate(
        {
            "smtp": {"host": "mail.example", "security": "tls", "password": "pw"},
            "webhook": {"url": "https://gw.example/?key=abcd", "headers": {"X-Key": "k"}},
            "departments": {"ICU": {"sms": ["+491"]}},
        }
    )
    assert settings.smtp.effective_port == 465
    assert settings.departments["ICU"].sms == ["+491"]
    assert "abcd" not in repr(settings)
    assert "pw" not in str(settings.model_dump())


def test_unreachable_configuration_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    Notifier(NotifySettings(emails=["a@b.example"], sms=["+491"]), History().record)
    assert "no SMTP host" in caplog.text
    assert "no webhook or e-mail-to-SMS" in caplog.text
