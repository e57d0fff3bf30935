"""E-mail and SMS: the mail server takes our login, the SMS gateway answers; with
``--send-test``, a test message to every recipient (and nothing is sent without it)."""

from __future__ import annotations

import string
from datetime import UTC, datetime

from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.config.notify import NotifySettings
from fastagi.notify.email import TEST_TEXT, SmtpChannel, compose_test
from fastagi.notify.webhook import WebhookChannel

_SMTP_REMEDIES = {
    "connect": "is notify.smtp.host/port right, and does the firewall let us out?"
    " (security = tls is port 465, starttls 587)",
    "starttls": "the server offers no STARTTLS or its certificate does not verify:"
    " security = tls for port 465, or ca_file for a private CA",
    "login": "check notify.smtp.username and password",
    "done": "see the server's answer",
}


def _emails(settings: NotifySettings) -> list[str]:
    lists = [settings.emails] + [r.emails for r in settings.departments.values() if r.emails]
    return list(dict.fromkeys(address for found in lists for address in found))


def _numbers(settings: NotifySettings) -> list[str]:
    lists = [settings.sms] + [r.sms for r in settings.departments.values() if r.sms]
    return list(dict.fromkeys(number for found in lists for number in found))


async def smtp(context: Context) -> Finding:
    settings = context.settings.notify
    emails = _emails(settings)
    numbers = _numbers(settings) if settings.email_sms_address else []
    if not settings.smtp.host:
        if emails or numbers:
            return Finding.fail(
                "e-mail recipients are set but notify.smtp.host is empty: nobody is e-mailed",
                "set [notify.smtp] host (and port, security, username, password)",
            )
        return Finding.ok("e-mail is off (no notify.smtp.host, no recipient)")
    channel = SmtpChannel(settings.smtp)
    found = await channel.verify()
    if not found.ok:
        return Finding.fail(found.detail, _SMTP_REMEDIES.get(found.step, ""))
    if not (emails or numbers):
        return Finding.warn(
            f"{found.detail}; but no recipient: nobody is e-mailed",
            "set [notify] emails (or a department's)",
        )
    if not context.send_test:
        return Finding.ok(f"{found.detail}; nothing sent (--send-test sends a test message)")
    sms_address = string.Template(settings.email_sms_address or "")
    targets = [(address, False) for address in emails] + [
        (sms_address.substitute(to=number.lstrip("+")), True) for number in numbers
    ]
    return await _send_test_mails(channel, settings.smtp.from_address, targets, found.detail)


async def _send_test_mails(
    channel: SmtpChannel, sender: str, targets: list[tuple[str, bool]], verified: str
) -> Finding:
    now = datetime.now(UTC)
    refused = []
    for address, short in targets:
        message = compose_test(sender=sender, recipient=address, at=now, short=short)
        outcome = await channel.send(message, address)
        if not outcome.ok:
            refused.append(f"{address}: {outcome.answer}")
    if refused:
        return Finding.fail(f"test message refused for {'; '.join(refused)}", "see the answers")
    return Finding.ok(f"{verified}; test message sent to {len(targets)} recipient(s)")


def _test_values(number: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "alarm_id": "0",
        "department": "test",
        "extension": "0",
        "event": "test",
        "time": now.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
        "time_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "by": "fastagi check",
        "to": number,
        "text": TEST_TEXT,
    }


async def webhook(context: Context) -> Finding:
    settings = context.settings.notify
    numbers = _numbers(settings)
    if settings.webhook.url is None:
        if numbers and not settings.email_sms_address:
            return Finding.fail(
                "SMS numbers are set but neither notify.webhook.url nor email_sms_address:"
                " nobody gets an SMS",
                "set [notify.webhook] url (or [notify] email_sms_address)",
            )
        return Finding.ok("SMS by webhook is off (no notify.webhook.url)")
    channel = WebhookChannel(settings.webhook)
    try:
        return await _probe_and_send(channel, numbers, send_test=context.send_test)
    finally:
        await channel.aclose()


async def _probe_and_send(
    channel: WebhookChannel, numbers: list[str], *, send_test: bool
) -> Finding:
    probe = await channel.probe()
    if probe.status is None:
        return Finding.fail(
            f"the SMS gateway {channel.target} does not answer: {probe.answer}",
            "is notify.webhook.url right, and may this host reach it?",
        )
    # 501: HEAD is not implemented there, which says nothing about the gateway's health.
    if probe.status >= 500 and probe.status != 501:
        return Finding.warn(
            f"the SMS gateway {channel.target} answers HEAD with {probe.answer}",
            "is the gateway healthy? (--send-test sends a real test SMS)",
        )
    if not numbers:
        return Finding.warn(
            f"{channel.target} answers ({probe.answer}); but no SMS number: nobody gets an SMS",
            "set [notify] sms (or a department's)",
        )
    if not send_test:
        return Finding.ok(
            f"{channel.target} answers ({probe.answer}); nothing sent"
            " (--send-test sends a test SMS)"
        )
    refused = []
    for number in numbers:
        outcome = await channel.send(_test_values(number))
        if not outcome.ok:
            refused.append(f"{number}: {outcome.answer}")
    if refused:
        return Finding.fail(f"test SMS refused for {'; '.join(refused)}", "see the answers")
    return Finding.ok(f"{channel.target}: test SMS sent to {len(numbers)} number(s)")


CHECKS = (
    Check("smtp", "the mail server takes our login", smtp),
    Check("webhook", "the SMS gateway answers", webhook),
)
