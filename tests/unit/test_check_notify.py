"""``fastagi check``'s e-mail and SMS lines against real servers on loopback (aiosmtpd,
the standard library's HTTP server): what passes, what fails and why, and that nothing
is sent without ``--send-test``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import SecretStr

from fastagi.assurance import Report, Status, run_checks
from fastagi.config import JournalSettings, Settings
from fastagi.config.notify import NotifySettings, SmtpSettings, WebhookSettings
from tests.notify_servers import SmtpServer, WebhookServer, free_port, login_smtp

pytestmark = pytest.mark.timeout(30)

PASSWORD = "correct-horse-battery-staple"
KEY = "sk_live_0123456789abcdef0123"


def settings(**notify: Any) -> Settings:
    return Settings(notify=NotifySettings(**notify), journal=JournalSettings(directory=None))


async def line(settings: Settings, name: str, *, send_test: bool = False) -> tuple[Status, str]:
    report: Report = await run_checks(settings, only=[name], send_test=send_test)
    result = report.result(name)
    return result.status, result.message


@pytest.fixture
def tls_smtp(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[SmtpServer, str]]:
    with login_smtp(ca, tmp_path, PASSWORD) as started:
        yield started


def smtp_settings(port: int, ca_file: str, password: str = PASSWORD) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        security="starttls",
        username="pbx",
        password=SecretStr(password),
        ca_file=Path(ca_file),
        from_address="pbx@hospital.example",
        timeout=5,
    )


async def test_smtp_starttls_and_login_pass_and_nothing_is_sent(
    tls_smtp: tuple[SmtpServer, str],
) -> None:
    server, ca_file = tls_smtp
    found = settings(smtp=smtp_settings(server.port, ca_file), emails=["er@hospital.example"])
    status, message = await line(found, "smtp")
    assert status is Status.OK, message
    assert message == (
        f"127.0.0.1:{server.port}: connected, STARTTLS, logged in as pbx; nothing sent"
        " (--send-test sends a test message)"
    )
    assert server.inbox.mails == []


async def test_smtp_refusing_the_login_fails_without_the_password(
    tls_smtp: tuple[SmtpServer, str],
) -> None:
    server, ca_file = tls_smtp
    wrong = "not-the-password-at-all"
    found = settings(smtp=smtp_settings(server.port, ca_file, wrong), emails=["er@x.example"])
    report = await run_checks(found, only=["smtp"])
    result = report.result("smtp")
    assert result.status is Status.FAIL
    assert result.message.startswith(f"127.0.0.1:{server.port}: 535 ")
    assert result.remedy == "check notify.smtp.username and password"
    assert wrong not in json.dumps(report.to_dict())


async def test_smtp_without_starttls_or_listener_says_which_step(ca: trustme.CA) -> None:
    plain = SmtpServer()  # offers no STARTTLS
    plain.start()
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=plain.port, security="starttls", timeout=5)
        status, message = await line(settings(smtp=smtp, emails=["a@x.example"]), "smtp")
    finally:
        plain.stop()
    assert (status, message) == (
        Status.FAIL,
        f"127.0.0.1:{plain.port} does not offer STARTTLS (security = starttls)",
    )
    nobody = free_port()
    smtp = SmtpSettings(host="127.0.0.1", port=nobody, security="none", timeout=5)
    status, message = await line(settings(smtp=smtp, emails=["a@x.example"]), "smtp")
    assert status is Status.FAIL
    assert message.startswith(f"127.0.0.1:{nobody}: ")


async def test_send_test_mails_every_recipient_once_saying_there_is_no_alarm(
    tls_smtp: tuple[SmtpServer, str],
) -> None:
    server, ca_file = tls_smtp
    found = settings(
        smtp=smtp_settings(server.port, ca_file),
        emails=["er@hospital.example", "security@hospital.example"],
        departments={"ICU": {"emails": ["icu@hospital.example", "er@hospital.example"]}},
    )
    status, message = await line(found, "smtp", send_test=True)
    assert status is Status.OK, message
    assert message.endswith("test message sent to 3 recipient(s)")
    assert sorted(mail.rcpt_tos[0] for mail in server.inbox.mails) == [
        "er@hospital.example",
        "icu@hospital.example",
        "security@hospital.example",
    ]
    subjects = {mail.message["Subject"] for mail in server.inbox.mails}
    assert subjects == {"fastagi-panic test message (no alarm)"}


async def test_recipients_without_a_mail_server_fail() -> None:
    status, message = await line(settings(emails=["er@hospital.example"]), "smtp")
    assert status is Status.FAIL
    assert "notify.smtp.host is empty" in message
    assert await line(settings(), "smtp") == (
        Status.OK,
        "e-mail is off (no notify.smtp.host, no recipient)",
    )


async def test_webhook_answering_passes_and_no_sms_is_sent(gateway: WebhookServer) -> None:
    webhook = WebhookSettings(
        url=SecretStr(gateway.url(f"/send?key={KEY}&to=$to&text=$text")), method="GET"
    )
    found = settings(webhook=webhook, sms=["+491701234567"])
    report = await run_checks(found, only=["webhook"])
    result = report.result("webhook")
    # The standard library's server does not implement HEAD: 501 is still an answer.
    assert (result.status, result.message) == (
        Status.OK,
        "http://127.0.0.1 answers (HTTP 501 Unsupported method ('HEAD')); nothing sent"
        " (--send-test sends a test SMS)",
    )
    # The test server records what it answers (GET, POST ...), not the HEAD it refuses.
    assert gateway.requests == []
    assert KEY not in json.dumps(report.to_dict())


async def test_webhook_down_fails_and_send_test_sends_each_number(gateway: WebhookServer) -> None:
    nobody = free_port()
    down = WebhookSettings(url=SecretStr(f"http://127.0.0.1:{nobody}/sms?key={KEY}"))
    report = await run_checks(settings(webhook=down, sms=["+491701234567"]), only=["webhook"])
    result = report.result("webhook")
    assert result.status is Status.FAIL
    assert result.message.startswith("the SMS gateway http://127.0.0.1 does not answer: ")
    assert KEY not in json.dumps(report.to_dict())

    up = WebhookSettings(url=SecretStr(gateway.url("/sms")))
    found = settings(webhook=up, sms=["+491701234567"], departments={"ICU": {"sms": ["+4930123"]}})
    status, message = await line(found, "webhook", send_test=True)
    assert (status, message) == (Status.OK, "http://127.0.0.1: test SMS sent to 2 number(s)")
    bodies = [json.loads(request.body) for request in gateway.requests]
    assert sorted(body["to"] for body in bodies) == ["+491701234567", "+4930123"]
    assert all("There is no alarm" in body["text"] for body in bodies)
