"""SMS by webhook against a real HTTP server (the standard library's) on loopback."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from fastagi.notify import Notifier, NotifySettings, RetrySettings, WebhookSettings
from tests.notify_servers import History, WebhookServer, free_port

pytestmark = pytest.mark.timeout(30)

ACTIVATED = datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)
API_KEY = "k3y-0f-the-sms-gateway"
TOKEN = "Bearer t0ken-for-the-gateway"
FAST = RetrySettings(attempts=5, initial_backoff=0.01, max_backoff=0.05)
TEXT = "PANIC ALARM: Notaufnahme Süd, extension 201 #42 12:15 CEST"


def settings(url: str, **webhook: Any) -> NotifySettings:
    return NotifySettings(
        webhook=WebhookSettings(url=SecretStr(url), timeout=5, **webhook),
        sms=["+49 170 1234567"],
        retry=FAST,
        timezone="Europe/Berlin",
    )


async def activate(notifier: Notifier, department: str = "Notaufnahme Süd") -> int:
    return await notifier.notify(
        "activated", alarm_id=42, department=department, extension="201", activated_at=ACTIVATED
    )


def everything_recorded(history: History) -> str:
    return json.dumps([event.to_dict() for event in history.events], ensure_ascii=False)


async def test_json_post_with_secret_header(
    gateway: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    history = History()
    notifier = Notifier(
        settings(
            gateway.url(f"/v1/sms?api_key={API_KEY}"),
            headers={"Authorization": SecretStr(TOKEN)},
            body='{"to": "$to", "text": "$text", "alarm": $alarm_id, "time": "$time_utc"}',
        ),
        history.record,
    )
    assert await activate(notifier) == 1
    await history.wait_for(1, outcome="sent")
    await notifier.close()

    (request,) = gateway.requests
    assert request.method == "POST"
    assert request.path == f"/v1/sms?api_key={API_KEY}"
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "to": "+491701234567",
        "text": TEXT,
        "alarm": 42,
        "time": "2024-05-01T10:15:30Z",
    }
    assert history.details() == [
        {
            "event": "activated",
            "channel": "webhook",
            "recipient": "+491701234567",
            "attempt": 1,
            "attempts": 5,
            "outcome": "sent",
            "answer": '200 OK {"id": "m-1"}',
        }
    ]
    for secret in (API_KEY, TOKEN):
        assert secret not in caplog.text
        assert secret not in everything_recorded(history)


async def test_500_then_200(gateway: WebhookServer) -> None:
    gateway.statuses.append((500, "gateway broken"))
    history = History()
    notifier = Notifier(settings(gateway.url("/sms")), history.record)
    await activate(notifier)
    await history.wait_for(1, outcome="sent")
    await notifier.close()
    assert [(d["attempt"], d["outcome"], d["answer"]) for d in history.details()] == [
        (1, "retrying", "500 Internal Server Error gateway broken"),
        (2, "sent", '200 OK {"id": "m-1"}'),
    ]
    assert [event.kind for event in history.events] == [
        "notification_failed",
        "notification_sent",
    ]
    assert len(gateway.requests) == 2
    assert gateway.requests[0].body == gateway.requests[1].body


async def test_client_error_is_not_retried(gateway: WebhookServer) -> None:
    gateway.statuses.append((400, '{"error": "invalid number"}'))
    history = History()
    notifier = Notifier(settings(gateway.url("/sms")), history.record)
    await activate(notifier)
    await history.wait_for(1, outcome="failed")
    await notifier.close()
    assert [(d["attempt"], d["answer"]) for d in history.details()] == [
        (1, '400 Bad Request {"error": "invalid number"}')
    ]
    assert len(gateway.requests) == 1


async def test_answer_is_cut_and_scrubbed_of_secrets(gateway: WebhookServer) -> None:
    gateway.statuses.append((401, f"unknown key {API_KEY} " + "x" * 1000))
    history = History()
    notifier = Notifier(settings(gateway.url(f"/sms?key={API_KEY}")), history.record)
    await activate(notifier)
    await history.wait_for(1, outcome="failed")
    await notifier.close()
    (failure,) = history.details()
    assert failure["answer"].startswith("401 Unauthorized unknown key *** xxx")
    assert len(failure["answer"]) < 230
    assert API_KEY not in everything_recorded(history)


async def test_get_with_values_in_the_url(gateway: WebhookServer) -> None:
    history = History()
    notifier = Notifier(
        settings(
            gateway.url("/cgi-bin/sendsms?username=pbx&password=" + API_KEY + "&to=$to&text=$text"),
            method="GET",
        ),
        history.record,
    )
    await activate(notifier, department="Süd & Nord")
    await history.wait_for(1, outcome="sent")
    await notifier.close()
    (request,) = gateway.requests
    assert request.method == "GET"
    assert request.body == b""
    query = parse_qs(urlsplit(request.path).query)
    assert query["to"] == ["+491701234567"]
    assert query["text"] == ["PANIC ALARM: Süd & Nord, extension 201 #42 12:15 CEST"]
    assert query["password"] == [API_KEY]
    assert API_KEY not in everything_recorded(history)


async def test_form_body(gateway: WebhookServer) -> None:
    history = History()
    notifier = Notifier(
        settings(
            gateway.url("/sms"),
            content_type="application/x-www-form-urlencoded",
            body="To=$to&Body=$text",
        ),
        history.record,
    )
    await activate(notifier)
    await history.wait_for(1, outcome="sent")
    await notifier.close()
    (request,) = gateway.requests
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {"To": ["+491701234567"], "Body": [TEXT]}


async def test_json_injection_through_the_department_is_impossible(
    gateway: WebhookServer,
) -> None:
    history = History()
    notifier = Notifier(
        settings(gateway.url("/sms"), body='{"to": "$to", "dep": "$department"}'), history.record
    )
    await activate(notifier, department='Ward", "to": "+1900')
    await history.wait_for(1, outcome="sent")
    await notifier.close()
    assert json.loads(gateway.requests[0].body) == {
        "to": "+491701234567",
        "dep": 'Ward", "to": "+1900',
    }


async def test_gateway_down_is_retried_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    history = History()
    retry = RetrySettings(attempts=3, initial_backoff=0.01, max_backoff=0.01)
    url = f"http://127.0.0.1:{free_port()}/sms?key={API_KEY}"
    notifier = Notifier(settings(url).model_copy(update={"retry": retry}), history.record)
    await activate(notifier)
    await history.wait_for(1, outcome="failed")
    await notifier.close()
    assert [(d["attempt"], d["outcome"]) for d in history.details()] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "failed"),
    ]
    assert history.details()[0]["answer"].startswith("ConnectError")
    assert API_KEY not in caplog.text
    assert API_KEY not in everything_recorded(history)
