"""The history (``/history``, every role): the events of a period, filtered by department,
extension and kind, newest first, 50 a page; and its export (``/history/export``), the
same bytes ``fastagi history export`` writes for the same filter (fastagi/admin/history.py
formats both).

Pages are keyset pages (fastagi/store/history.py ``page_query``): a link to the next page
carries the last event's place (``before``/``after``: its time in microseconds and its
id), so a page deep in a large history costs what the first does, and an event written
meanwhile neither repeats nor hides a row.
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin.history import (
    EXPORT_FORMATS,
    MEDIA_TYPES,
    HistoryExport,
    history_filter,
    parse_time,
)
from fastagi.domain.directory import UNKNOWN_DEPARTMENT
from fastagi.domain.events import EventKind
from fastagi.store import StoreError
from fastagi.store.history import EventKey, HistoryFilter, StoredEvent
from fastagi.web.configure.forms import Form, empty
from fastagi.web.keys import STORES
from fastagi.web.security import SECURITY_HEADERS, require, template_context

PAGE_SIZE = 50
FILTER_FIELDS = ("since", "until", "department", "extension", "kind")
# The period shown when none is asked for: the last seven days, today included.
DEFAULT_DAYS = 7
_KEY = re.compile(r"(-?\d{1,20})_(\d{1,20})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history", history_page, name="history")
    app.router.add_get("/history/export", export)


def key_text(event: StoredEvent) -> str:
    """An event's place, for a page link: microseconds since the epoch, then its id."""
    delta = event.occurred_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}_{event.id}"


def parse_key(text: str) -> EventKey:
    match = _KEY.fullmatch(text)
    if match is None:
        raise StoreError("this page link is damaged: start again from the first page")
    micros, event_id = (int(part) for part in match.groups())
    try:
        return EventKey(_EPOCH + timedelta(microseconds=micros), event_id)
    except OverflowError:
        raise StoreError("this page link is damaged: start again from the first page") from None


def _filter(request: web.Request) -> tuple[Form, HistoryFilter | None]:
    """The filter as asked for (the form shows it again), checked by fastagi/admin."""
    query = request.query
    today = date.today()
    form = empty(
        "filter",
        FILTER_FIELDS,
        since=query.get("since") or (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
        until=query.get("until") or today.isoformat(),
        department=query.get("department", ""),
        extension=query.get("extension", ""),
        kind=query.get("kind", ""),
    )
    try:
        since = _time(form.value("since"), "since", end_of_day=False)
        until = _time(form.value("until"), "until", end_of_day=True)
        wanted = history_filter(
            since,
            until,
            department=form.value("department"),
            extension=form.value("extension"),
            kind=form.value("kind"),
        )
    except StoreError as exc:
        form.refuse(exc)
        return form, None
    return form, wanted


def _time(text: str, field: str, *, end_of_day: bool) -> datetime:
    try:
        return parse_time(text[:100], end_of_day=end_of_day)
    except ValueError as exc:
        raise StoreError(str(exc), field=field) from None


@require("viewer")
async def history_page(request: web.Request) -> web.StreamResponse:
    form, wanted = _filter(request)
    events: list[StoredEvent] = []
    newer = older = None
    status = 200
    if wanted is not None:
        try:
            events, newer, older = await _page(request, wanted, form)
        except StoreError as exc:
            form.refuse(exc)
    if form.refused:
        status = 400
    filters = {name: form.value(name) for name in FILTER_FIELDS if form.value(name)}
    stores = request.app[STORES]
    departments = [d.name for d in await stores.directory.list_departments()]
    return aiohttp_jinja2.render_template(
        "history.html",
        request,
        template_context(
            request,
            form=form,
            rows=[_row(event) for event in events],
            newer=newer,
            older=older,
            page_size=PAGE_SIZE,
            kinds=[("", "any kind"), *((kind.value, kind.value) for kind in EventKind)],
            departments=[*departments, UNKNOWN_DEPARTMENT],
            exports=[
                (f"/history/export?{urlencode({**filters, 'format': f})}", f.upper())
                for f in EXPORT_FORMATS
            ]
            if wanted is not None
            else [],
        ),
        status=status,
    )


async def _page(
    request: web.Request, wanted: HistoryFilter, form: Form
) -> tuple[list[StoredEvent], str | None, str | None]:
    """The page asked for, and the links to the newer and the older one (None: none)."""
    history = request.app[STORES].history
    query = request.query
    if "after" in query:  # the page before this one, read from its newest event up
        page = await history.events(
            wanted, after=parse_key(query["after"]), newest_first=False, limit=PAGE_SIZE + 1
        )
        has_newer, has_older = len(page) > PAGE_SIZE, True
        events = page[:PAGE_SIZE][::-1]
    else:
        after = parse_key(query["before"]) if "before" in query else None
        page = await history.events(wanted, after=after, newest_first=True, limit=PAGE_SIZE + 1)
        has_newer, has_older = after is not None, len(page) > PAGE_SIZE
        events = page[:PAGE_SIZE]
    filters = {name: form.value(name) for name in FILTER_FIELDS if form.value(name)}

    def link(direction: str, event: StoredEvent) -> str:
        return f"/history?{urlencode({**filters, direction: key_text(event)})}"

    if not events:
        return events, "/history?" + urlencode(filters) if has_newer else None, None
    newer = link("after", events[0]) if has_newer else None
    older = link("before", events[-1]) if has_older else None
    return events, newer, older


def _row(event: StoredEvent) -> dict[str, Any]:
    return {
        "event": event,
        "details": "; ".join(
            f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in event.details.items()
        ),
    }


@require("viewer")
async def export(request: web.Request) -> web.StreamResponse:
    form, wanted = _filter(request)
    export_format = request.query.get("format", "csv")
    if wanted is None or export_format not in EXPORT_FORMATS:
        problem = next(iter(form.errors.values()), form.message) or "format: csv or json"
        raise web.HTTPBadRequest(text=f"Nothing exported: {problem}")
    name = (
        f"fastagi-history-{wanted.since.date().isoformat()}"
        f"-{(wanted.until - timedelta(microseconds=1)).date().isoformat()}.{export_format}"
    )
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Content-Type": f"{MEDIA_TYPES[export_format]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    # The browser may go away mid-download: nothing more to send it.
    with contextlib.suppress(ConnectionResetError):
        async for chunk in HistoryExport(request.app[STORES], wanted, export_format).chunks():
            await response.write(chunk.encode("utf-8"))
        await response.write_eof()
    return response
