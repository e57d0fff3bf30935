"""What a notification says, independent of how it travels (pure: no I/O).

One :class:`Notification` holds the facts of an alarm event; the channels turn it into an
e-mail (:func:`subject`, :func:`body`), a short SMS text (:func:`sms_text`) or the values of
a webhook template (:func:`template_values`). Times are given in UTC and in the local
time zone, because the reader may be anywhere and the log files are in UTC.

Department names and the ``by`` of an acknowledgement come from administrators and
callers: :func:`one_line` removes control characters before they reach a header or a line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from fastagi.domain.events import NOTIFY_KINDS as KINDS
from fastagi.domain.events import NotifyKind

_HEADLINES: dict[NotifyKind, str] = {
    "activated": "PANIC ALARM",
    "acknowledged": "Alarm acknowledged",
    "deactivated": "Alarm ended",
    "escalated": "ALARM ESCALATED",
}
_WHEN: dict[NotifyKind, str] = {
    "activated": "Activated",
    "acknowledged": "Acknowledged",
    "deactivated": "Deactivated",
    "escalated": "Escalated",
}
# What begins every subject, SMS and body line of a drill's notification.
TEST_MARK = "[TEST]"
# A department name is a short label; a longer one is a paste accident.
_MAX_FIELD = 200
REDACTED = "***"


@dataclass(frozen=True)
class Notification:
    """The facts of one alarm event, as the alarm service knows them."""

    kind: NotifyKind
    alarm_id: int
    department: str
    extension: str
    activated_at: datetime
    at: datetime  # when this event happened (= activated_at for "activated")
    by: str | None = None  # who acknowledged, deactivated or escalated
    reason: str | None = None
    drill: bool = False  # a drill (fastagi/domain/drill.py): marked TEST_MARK

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind: {self.kind!r}")
        for name in ("activated_at", "at"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class Notice:
    """A message to the administrators about the system itself, not about an alarm
    (``kind``: ``health_degraded``, ``health_recovered``)."""

    kind: str
    subject: str
    text: str
    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("at must be timezone-aware")


@dataclass(frozen=True)
class Outcome:
    """One attempt's result. ``answer`` is the remote's reply (SMTP code and text, HTTP
    status and the start of the body) or the local error, with secrets already removed."""

    ok: bool
    answer: str
    retry: bool = False  # worth another attempt (a 4xx SMTP reply, HTTP 5xx, no connection)


def one_line(value: str, limit: int = _MAX_FIELD) -> str:
    """``value`` without control characters (CR, LF, NUL, ...; each becomes a space)."""
    cleaned = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in value
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_text(moment: datetime, zone: tzinfo | None) -> str:
    """In ``zone``, or the server's own time zone when None."""
    local = moment.astimezone(zone) if zone is not None else moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _both(moment: datetime, zone: tzinfo | None) -> str:
    return f"{utc_text(moment)} ({local_text(moment, zone)})"


def headline(note: Notification) -> str:
    text = f"{_HEADLINES[note.kind]}: {one_line(note.department)}"
    if note.extension:  # a drill started by the CLI or the schedule has none
        text += f", extension {one_line(note.extension)}"
    return f"{TEST_MARK} {text}" if note.drill else text


def subject(note: Notification) -> str:
    return f"{headline(note)} (alarm #{note.alarm_id})"


def body(note: Notification, zone: tzinfo | None) -> str:
    rows = [
        ("Department", one_line(note.department)),
        ("Extension", one_line(note.extension) or "-"),
        ("Alarm id", str(note.alarm_id)),
        ("Activated", _both(note.activated_at, zone)),
    ]
    if note.kind != "activated":
        when = _both(note.at, zone)
        if note.by:
            when += f" by {one_line(note.by)}"
        rows.append((_WHEN[note.kind], when))
    if note.reason:
        rows.append(("Reason", one_line(note.reason)))
    if note.drill:
        rows.append(("Drill", "this is a test of the panic alarm, not an alarm"))
    # One column for every kind of message, so they look alike in a mailbox.
    width = len("Acknowledged: ")
    lines = [f"{headline(note)}.", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines += ["", "-- ", "fastagi-panic"]
    return "\n".join(lines) + "\n"


def sms_text(note: Notification, zone: tzinfo | None) -> str:
    """One short line (an SMS holds 70 characters of non-GSM text, 160 of GSM)."""
    local = note.at.astimezone(zone) if zone is not None else note.at.astimezone()
    text = f"{headline(note)} #{note.alarm_id} {local.strftime('%H:%M %Z').strip()}"
    if note.kind != "activated" and note.by:
        text += f" by {one_line(note.by)}"
    return text


def template_values(note: Notification, zone: tzinfo | None) -> dict[str, str]:
    """The values of a webhook or e-mail-to-SMS template, except ``to``."""
    return {
        "alarm_id": str(note.alarm_id),
        "department": one_line(note.department),
        "extension": one_line(note.extension),
        "event": note.kind,
        "time": local_text(note.at, zone),
        "time_utc": note.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "by": one_line(note.by or ""),
        "text": sms_text(note, zone),
    }


class Redactor:
    """Replaces every occurrence of the given secrets in a text by ``***``.

    Remote answers and exception texts are passed through it before they reach a log or
    the history: a gateway's error page may quote the API key back, and an HTTP library's
    error may name the whole URL.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole. Very short
        # values (a port, "1") would blank out innocent text and are no secret anyway.
        unique = {secret for secret in secrets if len(secret) >= 4}
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def with_more(self, secrets: Iterable[str]) -> Redactor:
        return Redactor([*self._secrets, *secrets])
