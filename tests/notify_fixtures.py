"""Fixtures of the notification servers on loopback (tests/notify_servers.py): a plugin
of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.notify_servers import SmtpServer, WebhookServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no login) that keeps what it receives."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway() -> Iterator[WebhookServer]:
    """An HTTP server that records the webhook requests (SMS gateway, chat)."""
    server = WebhookServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ca() -> trustme.CA:
    """A certificate authority of the test's own, for the TLS servers' certificates."""
    return trustme.CA()
