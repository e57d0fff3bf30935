"""How times and states read on the console's pages (Jinja filters and helpers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

LAMP_LABELS = {
    "BUSY": "lit (busy)",
    "INUSE": "lit (in use)",
    "RINGING": "lit (ringing)",
    "NOT_INUSE": "off",
    "unknown": "not recorded",
}
EMERGENCY_LABELS = {
    "emergency_dialling": "calling {destination}",
    "emergency_call": "last call to {destination}: {outcome}",
    "escalated": "escalated: calling the escalation list",
    "emergency_exhausted": "every destination called, nobody acknowledged",
}


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 07 s``, ``12 s``."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def since(moment: datetime | None, now: datetime) -> str:
    return "" if moment is None else duration((now - moment).total_seconds())


def clock(moment: datetime | None) -> str:
    """The server's local time of day, to the second."""
    return "" if moment is None else moment.astimezone().strftime("%H:%M:%S")


def stamp(moment: datetime | None) -> str:
    """Date and time, local, to the millisecond (the timeline)."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def epoch_ms(moment: datetime | None) -> str:
    """For the board's script, which counts on from the server's times."""
    return "" if moment is None else str(int(moment.timestamp() * 1000))


def lamp_label(state: str) -> str:
    return LAMP_LABELS.get(state, state)


def emergency_label(kind: str, destination: str | None, outcome: str | None) -> str:
    template = EMERGENCY_LABELS.get(kind, kind.replace("_", " "))
    return template.format(destination=destination or "?", outcome=outcome or "?")


FILTERS: dict[str, Any] = {
    "duration": duration,
    "clock": clock,
    "stamp": stamp,
    "epoch_ms": epoch_ms,
    "lamp_label": lamp_label,
}
GLOBALS: dict[str, Any] = {"since": since, "emergency_label": emergency_label}
