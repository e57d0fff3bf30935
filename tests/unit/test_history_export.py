"""The history export's text, written batch by batch (fastagi/admin/history.py), is the
text of the whole export written at once: ``json.dumps(events, indent=2)`` and one CSV
writer, whatever the events hold and wherever the batches split them."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastagi.admin.history import (
    CSV_COLUMNS,
    csv_rows,
    event_dict,
    json_default,
    json_end,
    json_items,
)
from fastagi.store.history import StoredEvent

# Texts stay short: what matters is which characters they hold (quotes, commas, CR, LF),
# and long ones made Hypothesis refuse most inputs as too large.
TEXTS = st.text(max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=8,
)
EVENTS = st.builds(
    StoredEvent,
    id=st.integers(1, 10**12),
    event_id=st.uuids(),
    occurred_at=st.datetimes(timezones=st.just(UTC)),
    alarm_id=st.none() | st.integers(1, 10**9),
    kind=st.sampled_from(["triggered", "page_cycle", "config_changed"]),
    extension=st.none() | st.text(max_size=20),
    department=st.none() | st.text(max_size=30),
    details=st.dictionaries(TEXTS, JSON_VALUES, max_size=4),
)


# Wall-clock limits measure the machine, not the export: make test runs beside Asterisk,
# PostgreSQL and Chromium (as the fuzz tests of tests/unit/test_agi_fuzz.py do).
EXPORT_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def batches(events: list[StoredEvent], cuts: list[int]) -> list[list[StoredEvent]]:
    edges = sorted({0, len(events), *(cut % (len(events) + 1) for cut in cuts)})
    return [events[a:b] for a, b in itertools.pairwise(edges)]


@EXPORT_PROPERTY
@given(st.lists(EVENTS, max_size=8), st.lists(st.integers(0, 20), max_size=4))
def test_json_in_batches_is_json_dumps_of_the_whole(events, cuts) -> None:
    written = 0
    text = ""
    for batch in batches(events, cuts):
        text += json_items(batch, first=written == 0)
        written += len(batch)
    text += json_end(empty=written == 0)

    whole = json.dumps([event_dict(e) for e in events], indent=2, default=json_default) + "\n"
    assert text == whole


def cells(event: StoredEvent) -> list[str]:
    row = event_dict(event)
    row["details"] = json.dumps(row["details"], sort_keys=True)
    row["drill"] = "true" if row["drill"] else "false"
    return [
        "" if row[c] is None else row[c].isoformat() if c == "occurred_at" else str(row[c])
        for c in CSV_COLUMNS
    ]


@EXPORT_PROPERTY
@given(st.lists(EVENTS, max_size=8), st.lists(st.integers(0, 20), max_size=4))
def test_csv_in_batches_reads_back_as_the_events(events, cuts) -> None:
    text = csv_rows([], header=True) + "".join(csv_rows(b) for b in batches(events, cuts))

    read = list(csv.reader(io.StringIO(text, newline="")))
    assert read == [list(CSV_COLUMNS), *(cells(e) for e in events)]
    # What the csv module writes, but for a lone CR, which it leaves unquoted.
    if not any("\r" in cell for event in events for cell in cells(event)):
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([CSV_COLUMNS, *(cells(e) for e in events)])
        assert text == buffer.getvalue()


def test_a_lone_carriage_return_is_quoted() -> None:
    event = StoredEvent(
        1, UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC), None, "x", None, "a\rb", {}
    )
    [_, row] = list(csv.reader(io.StringIO(csv_rows([event], header=True), newline="")))
    assert row[6] == "a\rb"


def test_an_event_reads_as_the_cli_always_wrote_it() -> None:
    event = StoredEvent(
        7,
        UUID(int=1),
        datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(microseconds=5),
        None,
        "config_changed",
        None,
        'Ward "7"',
        {"by": "web:ada", "name": "a,\nb"},
    )
    assert csv_rows([event], header=True) == (
        "id,event_id,occurred_at,alarm_id,kind,extension,department,details,drill\n"
        "7,00000000-0000-0000-0000-000000000001,2026-11-01T12:00:00.000005+00:00,,"
        'config_changed,,"Ward ""7""","{""by"": ""web:ada"", ""name"": ""a,\\nb""}",false\n'
    )
    assert json_items([event], first=True) + json_end(empty=False) == (
        "[\n  {\n"
        '    "id": 7,\n'
        '    "event_id": "00000000-0000-0000-0000-000000000001",\n'
        '    "occurred_at": "2026-11-01T12:00:00.000005+00:00",\n'
        '    "alarm_id": null,\n'
        '    "kind": "config_changed",\n'
        '    "extension": null,\n'
        '    "department": "Ward \\"7\\"",\n'
        '    "details": {\n'
        '      "by": "web:ada",\n'
        '      "name": "a,\\nb"\n'
        "    },\n"
        '    "drill": false\n'
        "  }\n]\n"
    )
