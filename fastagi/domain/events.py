"""The alarm history: one :class:`HistoryEvent` per step, appended to ``alarm_events``.

An event is made where the step happens (a flow, the paging loop, the CLI) and written by
the store, usually in the transaction of the state change it records. ``event_id`` is
its idempotency key: an event journalled to disk while PostgreSQL is down is replayed
once (the insert ignores an ``event_id`` it already has), and ``occurred_at`` is when it
happened, not when it reached the database.

``details`` is free-form, JSON-serialisable, and must never hold a PIN: a key containing
``pin`` (any case, at any depth) is refused.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

# The moments of an alarm that people are told about by e-mail and SMS.
NotifyKind = Literal["activated", "acknowledged", "deactivated", "escalated"]
NOTIFY_KINDS: tuple[NotifyKind, ...] = ("activated", "acknowledged", "deactivated", "escalated")


class EventKind(enum.StrEnum):
    # The panic call, in order.
    TRIGGERED = "triggered"  # the panic route answered a caller
    PROMPT_PLAYED = "prompt_played"  # the confirmation prompt
    CONFIRMED = "confirmed"  # the caller confirmed
    CANCELLED = "cancelled"  # the caller cancelled
    NO_ANSWER = "no_answer"  # no valid answer after the allowed attempts
    CALLER_HUNG_UP = "caller_hung_up"
    TRIGGER_REFUSED = "trigger_refused"  # from a trunk or a non-extension endpoint
    # No server took the panic call: the dialplan asked, raised and paged by itself, and
    # a server adopted the alarm later (fastagi/domain/fallback.py). Its occurred_at is
    # when the dialplan raised it.
    TRIGGERED_FALLBACK = "triggered_fallback"
    # The alarm's life.
    ACTIVATED = "activated"  # a new alarm
    RETRIGGERED = "retriggered"  # a trigger while the key's alarm was already active
    RESUMED = "resumed"  # a (re)started server took over an active alarm
    PAGE_CYCLE = "page_cycle"  # the announcement was paged once
    PAGE_FAILED = "page_failed"  # a page could not be placed (AMI down, no devices)
    LAMP_CHANGED = "lamp_changed"  # a BLF lamp / device state was set
    NOTIFICATION_SENT = "notification_sent"  # e-mail, SMS, emergency call
    NOTIFICATION_FAILED = "notification_failed"
    # The emergency call (fastagi/alarms/emergency.py, fastagi/flows/acknowledge.py).
    EMERGENCY_DIALLING = "emergency_dialling"  # an attempt begins: who is called now
    EMERGENCY_CALL = "emergency_call"  # one attempt to one destination, with its outcome
    ACKNOWLEDGED = "acknowledged"  # a responder pressed 1 (at most one per alarm)
    ESCALATED = "escalated"  # no acknowledgement in time: the escalation list is called
    EMERGENCY_EXHAUSTED = "emergency_exhausted"  # every list and round called, no one acked
    # Deactivation.
    DEACTIVATION_REFUSED = "deactivation_refused"  # the extension is not a deactivator
    DEACTIVATION_FAILED = "deactivation_failed"  # wrong PIN
    DEACTIVATION_LOCKED_OUT = "deactivation_locked_out"  # too many wrong PINs
    DEACTIVATED = "deactivated"
    ALL_CLEAR = "all_clear"  # the all-clear announcement after a deactivation
    # Someone asked the alarm's leader to page the announcement now (the web console).
    PAGE_REQUESTED = "page_requested"
    # The web console's logins (fastagi/admin/users.py): who, from which address.
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"  # wrong name or password
    LOGIN_REFUSED = "login_refused"  # too many failures: rate-limited, not even checked
    LOGOUT = "logout"
    # The scheduled checks (fastagi/assurance/watch.py): the site turned degraded (a check
    # kept failing) or recovered; one event per transition, whichever server saw it.
    HEALTH_DEGRADED = "health_degraded"
    HEALTH_RECOVERED = "health_recovered"

    # Drills (fastagi/domain/drill.py): a drill is an alarm flagged as one, so its life
    # has the events above (page_cycle, lamp_changed, deactivated, ...) under its id.
    DRILL_STARTED = "drill_started"  # a new drill (not "activated": no real alarm began)
    DRILL_REFUSED = "drill_refused"  # a drill that could not start (wrong PIN, an alarm)
    DRILL_REPORT = "drill_report"  # its results: every device that did not answer
    # A recorded location (sql/010) the page could not use (its file missing or
    # unreadable): the page spoke the department and extension instead.
    RECORDING_UNUSABLE = "recording_unusable"
    # Everything else.
    CONFIG_CHANGED = "config_changed"  # an administrator changed departments, PINs, ...
    ERROR = "error"


FORBIDDEN_DETAIL = "pin"
# Values JSON gives back as they are: a flat mapping of these needs no round trip.
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True)
class HistoryEvent:
    kind: EventKind
    alarm_id: int | None
    extension: str | None
    department: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    event_id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    #: ``details`` as JSON text, made once: what the store writes to the jsonb column.
    details_json: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        # Every call writes several events (six for a confirmed panic call), so this is
        # kept cheap: 42 us an event before, 2026-11-29 (docs/performance.md).
        object.__setattr__(self, "kind", EventKind(self.kind))
        details = dict(self.details)
        try:
            text = json.dumps(details, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event details must be JSON: {exc}") from None
        if not all(type(key) is str for key in details) or not all(
            type(value) in _JSON_SCALARS for value in details.values()
        ):
            # Nested values, tuples, subclasses (an enum): kept as JSON reads them back.
            details = json.loads(text)
            text = json.dumps(details)
        _refuse_pins(details, "details")
        object.__setattr__(self, "details", types.MappingProxyType(details))
        object.__setattr__(self, "details_json", text)
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")

    def with_alarm(self, alarm_id: int) -> HistoryEvent:
        """This event, for alarm ``alarm_id`` (same event_id: it is the same event)."""
        return self._changed(alarm_id=alarm_id)

    def with_kind(self, kind: EventKind) -> HistoryEvent:
        """This event as ``kind`` (same event_id): for a caller that passes two kinds of
        which only one will be written (``activated`` or ``retriggered``)."""
        return self._changed(kind=EventKind(kind))

    def _changed(self, **changes: Any) -> HistoryEvent:
        # A copy that skips __post_init__ (dataclasses.replace would run it): the details
        # were checked and converted when this event was made.
        changed = object.__new__(HistoryEvent)
        changed.__dict__.update(self.__dict__, **changes)
        return changed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, e.g. for the journal; :meth:`from_dict` reverses it."""
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at.isoformat(),
            "kind": str(self.kind),
            "alarm_id": self.alarm_id,
            "extension": self.extension,
            "department": self.department,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEvent:
        return cls(
            kind=EventKind(data["kind"]),
            alarm_id=data["alarm_id"],
            extension=data["extension"],
            department=data["department"],
            details=data["details"],
            event_id=UUID(data["event_id"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
        )


def _refuse_pins(value: object, where: str) -> None:
    """``value`` is what JSON reads back: dicts with str keys, lists and scalars."""
    if type(value) is dict:
        for key, item in value.items():
            if FORBIDDEN_DETAIL in key.lower():
                raise ValueError(
                    f"event {where} must not hold a PIN: key {key!r} contains '{FORBIDDEN_DETAIL}'"
                )
            if type(item) is dict or type(item) is list:
                _refuse_pins(item, f"{where}.{key}")
    elif type(value) is list:
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                _refuse_pins(item, f"{where}[{index}]")


def aware_time(text: object) -> datetime | None:
    """``text`` as a time with its zone (ISO 8601); None when it is no such text."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def page_started_at(details: Mapping[str, Any]) -> datetime | None:
    """When a ``page_cycle`` event's page began: its ``started_at`` detail (written since
    cycles are counted at their start); None when it has none."""
    return aware_time(details.get("started_at"))
