"""Replaying an alarm (issue 13, part 4): the replay file's shape, and how two timelines
of the same alarm are compared. Pure: the export is fastagi/admin/replay.py, the engine
that re-enacts a file against the sandbox is fastagi_dev/replay.py.

A timeline is the alarm's events, each at its offset in seconds from the activation; a
page cycle sits where its page began (its ``started_at`` detail), not where its event was
written, at the page's end. The loop decides when a page begins, start to start
(fastagi/alarms/loop.py), and that is what a replay re-enacts; how long a page lasts is up
to the phones and the machine (a loaded sandbox stretched one by 2 s), and comparing ends
made a replay "differ" from a run whose schedule it matched. Two timelines match when
each kind comes as often, and the n-th replayed event of a kind comes within
``tolerance`` of the n-th original's offset divided by the replay's speed; a page cycle
also matches on what each device did (answered, busy, no answer). The directory the
alarm paged (``directory``: its department, paging group, devices, interval) is compared
key by key, so a change of paging group is named as such; so are the server's
``[alarm]`` settings (``settings``) the replay had to page with other values than the
original's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastagi.domain.events import aware_time, page_started_at

FORMAT = "fastagi-replay/1"
#: Kinds a replay re-enacts and compares; the rest (lamps, notifications) are context.
COMPARED_KINDS = frozenset(
    {"triggered", "confirmed", "cancelled", "no_answer", "activated", "page_cycle", "deactivated"}
)
#: Kinds a replay does not re-enact (the sandbox sends no e-mail or SMS and calls no
#: emergency service) but lists beside the original's timeline and in its report, so a
#: reader sees the whole story and what the replay left out.
LISTED_KINDS = frozenset(
    {
        "notification_sent",
        "notification_failed",
        "emergency_dialling",
        "emergency_call",
        "acknowledged",
        "escalated",
        "emergency_exhausted",
        "all_clear",
    }
)
#: The details that say what a listed step was, in this order.
_SUMMARY_KEYS = ("event", "channel", "list", "destination", "recipient", "outcome", "by")
#: A detail whose key says secret is never exported (events never hold a PIN; this is
#: the belt to that brace).
_SECRET_KEY = re.compile(r"pin|secret|password|token|passwd", re.IGNORECASE)


@dataclass(frozen=True)
class TimelineEntry:
    kind: str
    at: float  # seconds from the activation
    details: Mapping[str, Any]


def scrub(value: Any) -> Any:
    """``value`` without any mapping key that names a secret, at any depth."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def entries(document: Mapping[str, Any]) -> list[TimelineEntry]:
    """The compared entries of a replay file's timeline, in time order (a page cycle at
    its start: see the module's docstring)."""
    activated_at = aware_time((document.get("alarm") or {}).get("activated_at"))
    timeline = [
        TimelineEntry(str(e["kind"]), _offset(e, activated_at), e.get("details") or {})
        for e in document["events"]
        if e["kind"] in COMPARED_KINDS
    ]
    return sorted(timeline, key=lambda entry: entry.at)


def _offset(event: Mapping[str, Any], activated_at: datetime | None) -> float:
    """The event's ``at``; a page cycle's start when the file says when it began."""
    started = page_started_at(event.get("details") or {})
    if event["kind"] == "page_cycle" and started is not None and activated_at is not None:
        return round((started - activated_at).total_seconds(), 3)
    return float(event["at"])


def listed_entries(document: Mapping[str, Any]) -> list[TimelineEntry]:
    """The steps of the file's timeline a replay lists but does not re-enact."""
    return [
        TimelineEntry(str(e["kind"]), float(e["at"]), e.get("details") or {})
        for e in document["events"]
        if e["kind"] in LISTED_KINDS
    ]


def summary(entry: TimelineEntry) -> str:
    """``emergency_call at +3.20 s (destination PJSIP/204, outcome acknowledged)``."""
    said = [f"{k} {entry.details[k]}" for k in _SUMMARY_KEYS if entry.details.get(k) is not None]
    return f"{entry.kind} at {entry.at:+.2f} s" + (f" ({', '.join(said)})" if said else "")


def not_replayed(listed: Sequence[TimelineEntry]) -> list[str]:
    """One line per step of the original the replay did not re-enact."""
    return [summary(entry) for entry in listed]


def device_outcomes(entry: TimelineEntry) -> dict[str, str]:
    devices = entry.details.get("devices") or {}
    return {str(k): str(v) for k, v in devices.items()}


def compare_timelines(
    original: Sequence[TimelineEntry],
    replayed: Sequence[TimelineEntry],
    *,
    speed: float = 1.0,
    tolerance: float = 1.5,
) -> list[str]:
    """The differences, one line each; empty when the timelines match.

    Events are paired kind by kind (the n-th page cycle with the n-th page cycle): two
    events a few milliseconds apart (a page's end and a deactivation) may come in either
    order, which the tolerance allows anyway."""
    differences = []
    for kind in sorted({e.kind for e in original} | {e.kind for e in replayed}):
        before = [e for e in original if e.kind == kind]
        after = [e for e in replayed if e.kind == kind]
        if len(before) != len(after):
            differences.append(f"{kind}: {len(before)} then, {len(after)} now")
        for number, (old, new) in enumerate(zip(before, after, strict=False), 1):
            expected = old.at / speed
            if abs(new.at - expected) > tolerance:
                differences.append(
                    f"{kind} #{number}: at {new.at:+.2f} s, expected {expected:+.2f} s"
                    f" (±{tolerance} s)"
                )
            if kind == "page_cycle" and device_outcomes(old) != device_outcomes(new):
                differences.append(
                    f"page_cycle #{number}: devices {device_outcomes(old)} then,"
                    f" {device_outcomes(new)} now"
                )
    return differences


def compare_directories(
    original: Mapping[str, Any] | None, replayed: Mapping[str, Any] | None
) -> list[str]:
    """What differs between two directory snapshots, named: ``paging group: 'A' then,
    'B' now``."""
    before = dict((original or {}).get("department") or {})
    after = dict((replayed or {}).get("department") or {})
    differences = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            label = key.replace("_", " ")
            differences.append(f"{label}: {before.get(key)!r} then, {after.get(key)!r} now")
    policy_before = dict((original or {}).get("policy") or {})
    policy_after = dict((replayed or {}).get("policy") or {})
    for key in sorted(set(policy_before) | set(policy_after)):
        if policy_before.get(key) != policy_after.get(key):
            differences.append(
                f"policy {key.replace('_', ' ')}: {policy_before.get(key)!r} then,"
                f" {policy_after.get(key)!r} now"
            )
    return differences


def compare_settings(
    recorded: Mapping[str, Any] | None, used: Mapping[str, Any], section: str = "alarm"
) -> list[str]:
    """The settings the replay could not take over from the file, named: ``setting
    alarm.lead_in: 1.0 then, 0.2 now`` (a key this version does not know: ``... now``
    says so). Empty when the file has none (``notes`` of the engine say that)."""
    if recorded is None:
        return []
    differences = []
    for key in sorted(set(recorded) | set(used)):
        if key not in used:
            differences.append(
                f"setting {section}.{key}: {recorded[key]!r} then, not a setting here"
            )
        elif recorded.get(key, used[key]) != used[key]:
            differences.append(
                f"setting {section}.{key}: {recorded[key]!r} then, {used[key]!r} now"
            )
    return differences


def side_by_side(
    original: Sequence[TimelineEntry],
    replayed: Sequence[TimelineEntry],
    listed: Sequence[TimelineEntry] = (),
) -> str:
    """Both timelines in two columns, for a person; the ``listed`` steps of the original
    in its column, in time order, marked ``*`` (not re-enacted), the other column empty."""
    rows: list[tuple[str, str]] = []
    compared, others = list(original), sorted(listed, key=lambda e: e.at)
    index = 0
    for entry in compared:
        while others and others[0].at < entry.at:
            rows.append((_cell(others.pop(0), "*"), ""))
        right = _cell(replayed[index]) if index < len(replayed) else ""
        rows.append((_cell(entry), right))
        index += 1
    rows += [(_cell(entry, "*"), "") for entry in others]
    rows += [("", _cell(entry)) for entry in replayed[index:]]
    lines = [f"{'ORIGINAL':<40} REPLAYED"]
    lines += [f"{left:<40} {right}".rstrip() for left, right in rows]
    if listed:
        lines.append("(* not re-enacted by a replay: listed only)")
    return "\n".join(lines)


def _cell(entry: TimelineEntry, mark: str = "") -> str:
    return f"{entry.at:+8.2f} s  {entry.kind}{mark}"
