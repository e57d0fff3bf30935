"""The history as administrators read it, shared by ``fastagi history export`` and the web
console (which are above this layer): the period's parsing, the filter's checks, and the
CSV and JSON export, so both give the same bytes.

An export reads the history in keyset batches (fastagi/store/history.py ``page_query``)
and yields its text batch by batch: a large period never sits in memory whole, and the
console's event loop (shared with the FastAGI server) is never held for long.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from fastagi.domain.events import EventKind
from fastagi.store import StoreError, Stores
from fastagi.store.history import EventKey, HistoryFilter, StoredEvent

CSV_COLUMNS = (
    "id",
    "event_id",
    "occurred_at",
    "alarm_id",
    "kind",
    "extension",
    "department",
    "details",
    "drill",  # the event belongs to a drill: leave it out of alarm statistics
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
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON writes it
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


EXPORT_FORMATS = ("csv", "json")
MEDIA_TYPES = {"csv": "text/csv", "json": "application/json"}
# Events read and formatted per step of an export.
EXPORT_BATCH = 500
# The longest department or extension text a filter takes.
MAX_FILTER_TEXT = 200


def history_filter(
    since: datetime,
    until: datetime,
    *,
    department: str | None = None,
    extension: str | None = None,
    kind: str | None = None,
) -> HistoryFilter:
    """A filter of the history, checked: StoreError (with the argument as ``field``) for a
    period that ends before it starts, an unknown kind, or a text PostgreSQL cannot hold.
    Blank texts filter nothing."""
    if since >= until:
        raise StoreError("the period must end after it starts", field="until")
    texts: dict[str, str | None] = {}
    for field, given in (("department", department), ("extension", extension)):
        text = (given or "").strip() or None
        if text is not None and ("\0" in text or len(text) > MAX_FILTER_TEXT):
            raise StoreError(
                f"a {field} to look for has at most {MAX_FILTER_TEXT} characters and no NUL",
                field=field,
            )
        texts[field] = text
    kind = (kind or "").strip() or None
    if kind is not None and kind not in EventKind.__members__.values():
        raise StoreError(f"unknown kind of event '{kind}'", field="kind")
    return HistoryFilter(
        since, until, department=texts["department"], extension=texts["extension"], kind=kind
    )


class HistoryExport:
    """One export of ``wanted`` as ``csv`` (a header, then one row per event, details as
    sorted JSON) or ``json`` (an array of objects, indented by two): :meth:`chunks` yields
    its text in order; ``count`` is how many events it has written so far."""

    def __init__(
        self,
        stores: Stores,
        wanted: HistoryFilter,
        export_format: str,
        *,
        batch: int = EXPORT_BATCH,
    ) -> None:
        if export_format not in EXPORT_FORMATS:
            raise StoreError(f"unknown export format '{export_format}'", field="format")
        self._stores = stores
        self._wanted = wanted
        self._format = export_format
        self._batch = batch
        self.count = 0

    async def chunks(self) -> AsyncIterator[str]:
        if self._format == "csv":
            yield csv_rows([], header=True)
        after: EventKey | None = None
        while True:
            events = await self._stores.history.events(
                self._wanted, after=after, newest_first=False, limit=self._batch
            )
            if events:
                yield (
                    csv_rows(events)
                    if self._format == "csv"
                    else json_items(events, first=self.count == 0)
                )
                self.count += len(events)
            if len(events) < self._batch:
                break
            after = EventKey(events[-1].occurred_at, events[-1].id)
        if self._format == "json":
            yield json_end(empty=self.count == 0)

    async def text(self) -> str:
        return "".join([chunk async for chunk in self.chunks()])


def csv_rows(events: Sequence[StoredEvent], *, header: bool = False) -> str:
    """CSV lines ending in ``\n``, a field quoted when it holds a comma, a quote or a
    line break. (The csv module's writer with that terminator leaves a lone ``\r``
    unquoted, which splits the row for every reader: a department name may hold one.)"""
    lines = [_csv_line(CSV_COLUMNS)] if header else []
    for event in events:
        row = event_dict(event)
        row["details"] = json.dumps(row["details"], sort_keys=True)
        lines.append(_csv_line([_cell(row[c]) for c in CSV_COLUMNS]))
    return "".join(lines)


def _csv_line(cells: Sequence[str]) -> str:
    return ",".join(_csv_field(cell) for cell in cells) + "\n"


def _csv_field(cell: str) -> str:
    if any(char in cell for char in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def json_items(events: Sequence[StoredEvent], *, first: bool) -> str:
    """Events as elements of the array ``json.dumps(events, indent=2)`` writes: each
    object indented one level (JSON text holds no raw line break, so indenting its lines
    is exact), after ``[`` or a comma."""
    parts = []
    for index, event in enumerate(events):
        item = json.dumps(event_dict(event), indent=2, default=json_default)
        opening = "[\n  " if first and index == 0 else ",\n  "
        parts.append(opening + item.replace("\n", "\n  "))
    return "".join(parts)


def json_end(*, empty: bool) -> str:
    return "[]\n" if empty else "\n]\n"


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
