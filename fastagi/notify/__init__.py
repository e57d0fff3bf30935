"""Telling people about alarms: e-mail, SMS by webhook, SMS by e-mail.

:class:`Notifier` is the entry point; the rest is exported for tests and the CLI.
"""

from fastagi.config.notify import (
    NotifySettings,
    Recipients,
    RetrySettings,
    SmtpSettings,
    WebhookSettings,
)
from fastagi.domain.events import NOTIFY_KINDS as KINDS
from fastagi.domain.events import NotifyKind
from fastagi.notify.dispatcher import Notifier
from fastagi.notify.email import SmtpChannel, compose
from fastagi.notify.message import Notice, Notification, Outcome, Redactor
from fastagi.notify.webhook import WebhookChannel

__all__ = [
    "KINDS",
    "Notice",
    "Notification",
    "Notifier",
    "NotifyKind",
    "NotifySettings",
    "Outcome",
    "Recipients",
    "Redactor",
    "RetrySettings",
    "SmtpChannel",
    "SmtpSettings",
    "WebhookChannel",
    "WebhookSettings",
    "compose",
]
