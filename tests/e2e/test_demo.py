"""The production wiring end to end: ``running_server`` (what ``fastagi serve`` runs)
against the sandbox and a fresh database seeded like ``make run``, driven by the same
story ``make demo`` plays: trigger and confirm, two page cycles, deactivation by PIN;
the emergency call reaches a SIPp security phone that acknowledges with 1; e-mail and SMS
reach a real SMTP server and a real HTTP gateway on loopback."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from fastagi.app import running_server
from fastagi.config import (
    EmergencySettings,
    Settings,
)
from fastagi.config.notify import NotifySettings, SmtpSettings, WebhookSettings
from fastagi.store import Stores
from fastagi_dev.demo import DEMO_CYCLES, DEMO_PHONES, run_demo
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.settings import server_settings
from fastagi_dev.sandbox.sipp import Responder
from fastagi_dev.seed import seed_demo
from tests.notify_servers import SmtpServer, WebhookServer

SECURITY_DESK = 246

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def settings_for(
    sandbox: Sandbox,
    agi_port: int,
    dsn: str,
    notify: NotifySettings | None = None,
    emergency: EmergencySettings | None = None,
) -> Settings:
    return server_settings(
        sandbox,
        agi_port,
        dsn,
        notify=notify or NotifySettings(),
        emergency=emergency or EmergencySettings(),
    )


async def test_the_demo_story_through_the_production_wiring(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool,
    smtp: SmtpServer,
    gateway: WebhookServer,
    tmp_path,
) -> None:
    demo = await seed_demo(Stores.over(db_pool))
    notify = NotifySettings(
        smtp=SmtpSettings(host="127.0.0.1", port=smtp.port, security="none", timeout=5),
        webhook=WebhookSettings(
            url=SecretStr(gateway.url("/sms")), body='{"to": "$to", "text": "$text"}'
        ),
        emails=["security@hospital.example"],
        sms=["+491701234567"],
    )

    emergency = EmergencySettings(destinations=[f"PJSIP/{SECURITY_DESK}"], ring_timeout=10)
    security_desk = Responder(sandbox, SECURITY_DESK, tmp_path, answers=["1"])
    settings = settings_for(sandbox, agi_port, database_dsn, notify, emergency)
    async with security_desk, running_server(settings):
        await run_demo(sandbox, database_dsn)

    store = Stores.over(db_pool)
    [alarm] = await store.alarms.recent_alarms()
    assert alarm.state == "deactivated"
    assert alarm.department_name == "Emergency Room"
    assert alarm.extension == "101"
    assert alarm.deactivated_by == f"extension {demo.deactivator}"
    kinds = [event.kind for event in await store.history.timeline(alarm.id)]
    assert kinds.count("activated") == 1
    assert kinds.count("deactivated") == 1
    cycles = [
        event for event in await store.history.timeline(alarm.id) if event.kind == "page_cycle"
    ]
    assert len(cycles) >= DEMO_CYCLES
    assert cycles[0].details["answered"] == len(DEMO_PHONES)
    assert await store.alarms.active_alarms() == []

    # The security desk answered the emergency call and pressed 1.
    timeline = await store.history.timeline(alarm.id)
    calls = [e.details for e in timeline if e.kind == "emergency_call"]
    acknowledgements = [e for e in timeline if e.kind == "acknowledged"]
    assert len(acknowledgements) == 1, calls
    [acknowledged] = acknowledgements
    assert f"PJSIP/{SECURITY_DESK}" in str(acknowledged.details)

    # One e-mail and one SMS when the alarm began, was acknowledged, and ended.
    subjects = [mail.message["Subject"] for mail in smtp.inbox.mails]
    assert len(subjects) == 3
    assert all("Emergency Room" in subject for subject in subjects)
    assert [mail.rcpt_tos for mail in smtp.inbox.mails] == [["security@hospital.example"]] * 3
    bodies = [request.body.decode() for request in gateway.requests]
    assert len(bodies) == 3
    assert all("+491701234567" in body and "Emergency Room" in body for body in bodies)
    sent = [e for e in timeline if e.kind == "notification_sent"]
    assert {(e.details["event"], e.details["channel"]) for e in sent} == {
        (event, channel)
        for event in ("activated", "acknowledged", "deactivated")
        for channel in ("email", "webhook")
    }
