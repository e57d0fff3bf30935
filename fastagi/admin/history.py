"""The history as administrators read it, shared by ``fastagi history export`` and the web
console (which are above this layer): the period's parsing and the CSV and JSON export,
so both give the same bytes."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from fastagi.store.history import StoredEvent

CSV_COLUMNS = (
    "id",
    "event_id",
    "occurred_at",
    "alarm_id",
    "kind",
    "extension",
    "department",
    "details",
)


def json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def event_dict(event: StoredEvent) -> dict[str, Any]:
    return dataclasses.asdict(event)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def export_text(events: Sequence[StoredEvent], export_format: str) -> str:
    """The events as ``csv`` (one row each, details as sorted JSON) or ``json``."""
    if export_format == "json":
        return json.dumps([event_dict(e) for e in events], indent=2, default=json_default) + "\n"
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for event in events:
        row = event_dict(event)
        row["details"] = json.dumps(row["details"], sort_keys=True)
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


def parse_time(text: str, *, end_of_day: bool) -> datetime:
    """A date (its midnight; the next one for ``end_of_day``) or an ISO date-time.
    Without an offset it is local time. ValueError says what is expected."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day:
                day += timedelta(days=1)
            moment = datetime.combine(day, time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a date: '{text}' (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()
