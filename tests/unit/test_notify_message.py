"""What notifications say, and the settings that guard them (pure: no servers)."""

from __future__ import annotations

import email
import email.policy
import json
import zoneinfo
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr, ValidationError

from fastagi.config.notify import Recipients
from fastagi.notify import Notification, NotifySettings, Redactor, WebhookSettings, compose
from fastagi.notify.message import body, one_line, sms_text, subject, template_values
from fastagi.notify.webhook import WebhookChannel, render_body, render_url

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ACTIVATED = datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)
ENDED = datetime(2024, 5, 1, 10, 20, 5, tzinfo=UTC)


def note(kind: str = "activated", **changes: object) -> Notification:
    facts: dict[str, object] = {
        "kind": kind,
        "alarm_id": 42,
        "department": "Notaufnahme Süd",
        "extension": "201",
        "activated_at": ACTIVATED,
        "at": ACTIVATED if kind == "activated" else ENDED,
        "by": None if kind == "activated" else "305",
    }
    facts.update(changes)
    return Notification(**facts)  # type: ignore[arg-type]


def test_activation_subject_and_body() -> None:
    assert subject(note()) == "PANIC ALARM: Notaufnahme Süd, extension 201 (alarm #42)"
    assert body(note(), BERLIN) == (
        "PANIC ALARM: Notaufnahme Süd, extension 201.\n"
        "\n"
        "Department:   Notaufnahme Süd\n"
        "Extension:    201\n"
        "Alarm id:     42\n"
        "Activated:    2024-05-01 10:15:30 UTC (2024-05-01 12:15:30 CEST)\n"
        "\n"
        "-- \n"
        "fastagi-panic\n"
    )


def test_deactivation_names_who_and_when() -> None:
    text = body(note("deactivated", reason="pin"), BERLIN)
    assert subject(note("deactivated")) == (
        "Alarm ended: Notaufnahme Süd, extension 201 (alarm #42)"
    )
    assert "Deactivated:  2024-05-01 10:20:05 UTC (2024-05-01 12:20:05 CEST) by 305\n" in text
    assert "Activated:    2024-05-01 10:15:30 UTC (2024-05-01 12:15:30 CEST)\n" in text
    assert "Reason:       pin\n" in text


def test_acknowledgement_and_escalation() -> None:
    assert "Acknowledged: 2024-05-01 10:20:05 UTC" in body(note("acknowledged"), BERLIN)
    assert subject(note("escalated")).startswith("ALARM ESCALATED: Notaufnahme Süd")


def test_sms_text_is_short() -> None:
    assert sms_text(note(), BERLIN) == "PANIC ALARM: Notaufnahme Süd, extension 201 #42 12:15 CEST"
    assert sms_text(note("deactivated"), BERLIN).endswith("#42 12:20 CEST by 305")


def test_notification_refuses_naive_times_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        note(at=datetime(2024, 5, 1, 10, 0))
    with pytest.raises(ValueError, match="unknown notification kind"):
        note("paged")


def test_one_line_removes_line_breaks() -> None:
    assert one_line("Ward\r\nBcc: x@evil.example\x00") == "Ward Bcc: x@evil.example"
    assert len(one_line("x" * 500)) == 200


def test_message_is_utf8_and_parses_back() -> None:
    message = compose(note(), sender="pbx@example.org", recipient="a@example.org", zone=BERLIN)
    raw = message.as_bytes()
    assert raw.isascii()  # RFC 2047 headers, quoted-printable body: any relay takes it
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed["Subject"] == "PANIC ALARM: Notaufnahme Süd, extension 201 (alarm #42)"
    assert parsed["To"] == "a@example.org"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Importance"] == "high"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content().replace("\r\n", "\n") == body(note(), BERLIN)


def test_header_injection_through_the_department_is_impossible() -> None:
    evil = note(department="Ward\r\nBcc: victim@evil.example\r\n\r\nforged body")
    raw = compose(evil, sender="pbx@example.org", recipient="a@example.org", zone=UTC).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert set(parsed.keys()) == {
        "From",
        "To",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "Importance",
        "X-Priority",
        "Subject",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    }
    assert parsed["Subject"].startswith("PANIC ALARM: Ward Bcc: victim@evil.example forged body")


@pytest.mark.parametrize(
    "address",
    ["a@b", "x\r\nBcc: y@example.org", "not an address", "Name <a@example.org>", "ü@example.org"],
)
def test_addresses_are_plain(address: str) -> None:
    if address == "a@b":
        assert NotifySettings(emails=[address]).emails == [address]
        return
    with pytest.raises(ValidationError):
        NotifySettings(emails=[address])


def test_phone_numbers_are_normalised() -> None:
    settings = NotifySettings(sms=["+49 (30) 123-4567", "0170/1234567"])
    assert settings.sms == ["+49301234567", "01701234567"]
    with pytest.raises(ValidationError, match="phone number"):
        NotifySettings(sms=["call me"])


def test_department_recipients_fall_back_to_the_default() -> None:
    settings = NotifySettings(
        emails=["all@example.org"],
        sms=["+491"],
        departments={
            "Notaufnahme Süd": Recipients(emails=["er@example.org"]),
            "Lab": Recipients(emails=[], sms=["+492"]),
        },
    )
    assert settings.recipients_for("notaufnahme süd") == (["er@example.org"], ["+491"])
    assert settings.recipients_for("Lab") == ([], ["+492"])
    assert settings.recipients_for("Other") == (["all@example.org"], ["+491"])


def test_templates_may_use_known_names_only() -> None:
    with pytest.raises(ValidationError, match=r"not \$password"):
        WebhookSettings(url=SecretStr("https://gw.example/send"), body='{"p": "$password"}')
    with pytest.raises(ValidationError, match="valid template"):
        WebhookSettings(url=SecretStr("https://gw.example/send"), body="costs 5$")
    with pytest.raises(ValidationError, match=r"must contain \$to"):
        NotifySettings(email_sms_address="sms@example.net")
    assert NotifySettings(email_sms_address="$to@sms.example.net").email_sms_address


def test_webhook_settings_refuse_header_injection_without_naming_the_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookSettings(headers={"Authorization": SecretStr("Bearer s3cr3t\r\nX-Evil: 1")})
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(ValidationError, match="header name"):
        WebhookSettings(headers={"Bad Name": SecretStr("x")})
    with pytest.raises(ValidationError) as caught:
        WebhookSettings(url=SecretStr("ftp://gw.example/?key=s3cr3t"))
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(WebhookSettings(url=SecretStr("https://gw/?key=s3cr3t")))


def test_json_body_escapes_every_value() -> None:
    values = template_values(note(department='Süd", "to": "+1900'), UTC) | {"to": "+491"}
    text = render_body('{"to": "$to", "text": "$text", "dep": "$department"}', values, "json")
    assert json.loads(text) == {
        "to": "+491",
        "text": 'PANIC ALARM: Süd", "to": "+1900, extension 201 #42 10:15 UTC',
        "dep": 'Süd", "to": "+1900',
    }


def test_form_body_and_url_are_encoded() -> None:
    values = {"to": "+491", "text": "a&b=c d"}
    assert render_body("to=$to&text=$text", values, "form") == "to=%2B491&text=a%26b%3Dc+d"
    url = render_url("http://gw:13013/cgi-bin/sendsms?to=$to&text=$text", values)
    assert parse_qs(urlsplit(url).query) == {"to": ["+491"], "text": ["a&b=c d"]}


def test_webhook_redacts_url_parts_and_headers() -> None:
    channel = WebhookChannel(
        WebhookSettings(
            url=SecretStr("https://user:pa55word@gw.example/send?api_key=KEY123&to=$to"),
            headers={"Authorization": SecretStr("Bearer TOKEN456")},
        )
    )
    text = "401 bad key KEY123 for user:pa55word, Bearer TOKEN456"
    assert channel.redact(text) == "401 bad key *** for user:***, ***"
    assert channel.target == "https://gw.example"


def test_redactor_replaces_longest_first() -> None:
    assert Redactor(["abcd", "abcdef", "x"])("abcdef abcd x") == "*** *** x"
