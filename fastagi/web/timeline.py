"""An alarm's history as the alarm page shows it: one readable line per event, and the
chart of its page cycles (time on x, answered phones on y) as plain SVG geometry that
the template draws (no chart library, no script)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastagi.store.history import StoredEvent


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    title: str
    text: str


def _by(details: dict[str, Any]) -> str:
    by = details.get("by")
    return f" by {by}" if by else ""


def _page(d: dict[str, Any]) -> tuple[str, str]:
    text = f"{d.get('answered', '?')} of {d.get('dialled', '?')} phones answered"
    if isinstance(d.get("duration"), int | float):
        text += f", {d['duration']:.1f} s"
    if d.get("interval"):
        text += f"; next in {d['interval']} s"
    if d.get("cancelled"):
        text += "; hung up (deactivated)"
    if d.get("error"):
        text += f"; error: {d['error']}"
    return f"Page cycle {d.get('cycle', '?')}", text


def _notification(d: dict[str, Any]) -> str:
    return (
        f"{d.get('channel', '?')} to {d.get('recipient', '?')} about {d.get('event', '?')}:"
        f" {d.get('outcome', '?')} (attempt {d.get('attempt', '?')})"
    )


_DESCRIBE: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "triggered": lambda d: (
        "Panic call",
        f"{d.get('channel', '')} via {d.get('caller_source', '')}",
    ),
    "triggered_fallback": lambda d: ("Raised by the dialplan", "no server answered the call"),
    "prompt_played": lambda d: ("Question played", ""),
    "confirmed": lambda d: ("Confirmed by the caller", ""),
    "no_answer": lambda d: ("No answer to the question", str(d.get("policy", ""))),
    "activated": lambda d: ("Alarm activated", f"by server {d.get('instance', '?')}"),
    "retriggered": lambda d: ("Triggered again", str(d.get("uniqueid", ""))),
    "resumed": lambda d: ("Taken over", f"by server {d.get('instance', '?')}"),
    "page_cycle": _page,
    "page_failed": lambda d: ("Page failed", str(d.get("error", ""))),
    "page_requested": lambda d: ("Announcement requested now", _by(d).strip()),
    "lamp_changed": lambda d: ("Lamp", f"{d.get('device', '?')}: {d.get('state', '?')}"),
    "notification_sent": lambda d: ("Notification delivered", _notification(d)),
    "notification_failed": lambda d: ("Notification failed", _notification(d)),
    "emergency_dialling": lambda d: ("Emergency call placed", f"calling {d.get('destination')}"),
    "emergency_call": lambda d: (
        "Emergency call ended",
        f"{d.get('destination')}: {d.get('outcome')}",
    ),
    "acknowledged": lambda d: ("Acknowledged", str(d.get("by") or d.get("destination") or "")),
    "escalated": lambda d: ("Escalated", "nobody acknowledged in time"),
    "emergency_exhausted": lambda d: ("Emergency calls exhausted", "nobody acknowledged"),
    "deactivation_refused": lambda d: ("Deactivation refused", str(d.get("reason", ""))),
    "deactivation_failed": lambda d: ("Wrong PIN", ""),
    "deactivation_locked_out": lambda d: ("PIN locked out", ""),
    "deactivated": lambda d: (
        "Deactivated",
        f"{d.get('by', '?')}: {d.get('reason', '')} ({d.get('source', 'call')})",
    ),
    "all_clear": lambda d: ("All clear paged", ""),
    "error": lambda d: ("Error", str(d.get("error", ""))),
}


def entries(events: Sequence[StoredEvent]) -> list[Entry]:
    lines = []
    for event in events:
        describe = _DESCRIBE.get(event.kind)
        title, text = describe(event.details) if describe else (event.kind.replace("_", " "), "")
        lines.append(Entry(event.occurred_at, event.kind, title, text))
    return lines


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    cycle: int
    answered: int
    dialled: int
    label: str  # for the bar's <title>


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: int  # y of the x axis
    bars: list[Bar]
    y_ticks: list[tuple[float, int]]  # (y, value)
    x_ticks: list[tuple[float, str]]  # (x, "+12 s")
    description: str


CHART_WIDTH = 640
CHART_HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 16, 14, 34


def cycle_chart(events: Sequence[StoredEvent], start: datetime, end: datetime) -> Chart | None:
    """Each page cycle as a bar at its start time, as tall as its answered phones;
    None when the alarm has no cycle yet."""
    cycles = [
        e for e in events if e.kind == "page_cycle" and isinstance(e.details.get("cycle"), int)
    ]
    if not cycles:
        return None
    points: list[tuple[float, int, int, int]] = []
    for event in cycles:
        d = event.details
        started = d.get("started_at")
        try:
            at = datetime.fromisoformat(started) if isinstance(started, str) else event.occurred_at
        except ValueError:
            at = event.occurred_at
        points.append(
            ((at - start).total_seconds(), d["cycle"], _count(d, "answered"), _count(d, "dialled"))
        )
    span = max((end - start).total_seconds(), max(p[0] for p in points) + 1.0, 1.0)
    top_value = max(1, *(p[3] for p in points), *(p[2] for p in points))
    plot_w = CHART_WIDTH - _LEFT - _RIGHT
    plot_h = CHART_HEIGHT - _TOP - _BOTTOM
    bottom = CHART_HEIGHT - _BOTTOM
    bar_w = max(3.0, min(18.0, plot_w / (len(points) * 2)))
    bars = []
    for offset, cycle, answered, dialled in points:
        height = plot_h * answered / top_value
        x = _LEFT + plot_w * offset / span
        bars.append(
            Bar(
                x=round(min(x, CHART_WIDTH - _RIGHT - bar_w), 1),
                y=round(bottom - height, 1),
                width=round(bar_w, 1),
                height=round(height, 1),
                cycle=cycle,
                answered=answered,
                dialled=dialled,
                label=f"cycle {cycle} at +{offset:.0f} s: {answered} of {dialled} answered",
            )
        )
    y_ticks = [(round(bottom - plot_h * v / top_value, 1), v) for v in _ticks(top_value)]
    x_ticks = [(round(_LEFT + plot_w * t / span, 1), _seconds(t)) for t in _time_ticks(span)]
    description = (
        f"{len(points)} page cycles over {_seconds(span)}; answered phones per cycle: "
        + ", ".join(str(p[2]) for p in points)
    )
    return Chart(CHART_WIDTH, CHART_HEIGHT, _LEFT, bottom, bars, y_ticks, x_ticks, description)


def _count(details: dict[str, Any], key: str) -> int:
    value = details.get(key)
    return value if isinstance(value, int) else 0


def _ticks(top: int) -> list[int]:
    step = max(1, top // 4)
    return list(range(0, top + 1, step))


def _time_ticks(span: float) -> list[float]:
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200):
        if span / step <= 6:
            return [float(t) for t in range(0, int(span) + 1, step)]
    return [0.0, span]


def _seconds(value: float) -> str:
    value = round(value)
    if value >= 3600:
        return f"+{value // 3600} h {value % 3600 // 60:02d} min"
    if value >= 60:
        return f"+{value // 60} min {value % 60:02d} s"
    return f"+{value} s"
