"""The history's pages and export against a real PostgreSQL (fastagi/store/history.py
``page_query``, fastagi/admin/history.py): keyset pages walk a filtered period without a
gap or a repeat, even through events of one instant; an export in batches is the same
text as in one; and with 100,000 events every page is read from an index in order (no
scan of the whole table, whichever plan PostgreSQL caches), with the times printed."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastagi.admin.history import HistoryExport, history_filter
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.history import EventKey, HistoryFilter, StoredEvent, page_query

pytestmark = [pytest.mark.db, pytest.mark.timeout(120)]

START = datetime(2026, 1, 1, tzinfo=UTC)
DEPARTMENTS = ("Ward", "Lab", 'Ward "7"\n<b>')
KINDS = (EventKind.TRIGGERED, EventKind.PAGE_CYCLE, EventKind.CONFIG_CHANGED)


async def seed(stores: Stores, count: int) -> None:
    """``count`` events, three at each instant (ties the keyset must order by id)."""
    await stores.history.append_events(
        HistoryEvent(
            KINDS[n % 3],
            None,
            str(100 + n % 4),
            DEPARTMENTS[n % 5 % 3],
            {"n": n, "text": 'a, "b"\nc'},
            occurred_at=START + timedelta(seconds=n // 3),
        )
        for n in range(count)
    )


def key(event: StoredEvent) -> EventKey:
    return EventKey(event.occurred_at, event.id)


async def walk(stores: Stores, wanted: HistoryFilter, *, newest_first: bool) -> list[int]:
    """Every page of ``wanted``, five events a page; the ids in the order shown."""
    seen: list[int] = []
    after: EventKey | None = None
    while True:
        page = await stores.history.events(wanted, after=after, newest_first=newest_first, limit=5)
        seen += [event.id for event in page]
        if len(page) < 5:
            return seen
        after = key(page[-1])


FILTERS = [
    {},
    {"department": "Ward"},
    {"department": 'Ward "7"\n<b>'},
    {"extension": "101"},
    {"kind": "page_cycle"},
    {"department": "Lab", "kind": "triggered", "extension": "102"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[",".join(f) or "all" for f in FILTERS])
async def test_keyset_pages_walk_a_filtered_period_without_gap_or_repeat(
    db_pool, filters: dict[str, str]
) -> None:
    stores = Stores.over(db_pool)
    await seed(stores, 90)
    wanted = history_filter(START + timedelta(seconds=2), START + timedelta(seconds=27), **filters)

    oldest_first = await walk(stores, wanted, newest_first=False)
    newest_first = await walk(stores, wanted, newest_first=True)

    expected = [
        e.id
        for e in await stores.history.history(wanted.since, wanted.until)
        if all(getattr(e, name) == value for name, value in filters.items())
    ]
    assert expected, "the filter matches something"
    assert oldest_first == expected
    assert newest_first == expected[::-1]


async def test_an_export_in_batches_is_the_text_of_one_batch(db_pool) -> None:
    stores = Stores.over(db_pool)
    await seed(stores, 40)
    wanted = history_filter(START, START + timedelta(days=1), department="Ward")
    for export_format in ("csv", "json"):
        whole = HistoryExport(stores, wanted, export_format, batch=1000)
        texts = [await whole.text()]
        for batch in (1, 2, 7):
            texts.append(await HistoryExport(stores, wanted, export_format, batch=batch).text())
        assert len(set(texts)) == 1, export_format
        assert whole.count == len([n for n in range(40) if n % 5 % 3 == 0])
    nothing = history_filter(START, START + timedelta(days=1), department="Nobody")
    assert await HistoryExport(stores, nothing, "json").text() == "[]\n"
    assert await HistoryExport(stores, nothing, "csv").text() == (
        "id,event_id,occurred_at,alarm_id,kind,extension,department,details,drill\n"
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"since": START, "until": START}, "until"),
        ({"kind": "panic"}, "kind"),
        ({"department": "x\0"}, "department"),
        ({"extension": "1" * 201}, "extension"),
    ],
)
def test_a_bad_filter_names_its_field(arguments: dict[str, Any], field: str) -> None:
    given = {"since": START, "until": START + timedelta(days=1), **arguments}
    with pytest.raises(StoreError) as refused:
        history_filter(given.pop("since"), given.pop("until"), **given)
    assert refused.value.field == field


# -- 100,000 events ---------------------------------------------------------------------

EVENTS = 100_000
# Common values (one in 8, 20, 200) and rare ones (ten events each), spread in time.
SEED_100K = """
INSERT INTO alarm_events (event_id, occurred_at, alarm_id, kind, extension, department, details)
SELECT gen_random_uuid(),
       $1::timestamptz + n * interval '7 seconds',
       NULL,
       CASE WHEN n % 10000 = 0 THEN 'escalated'
            ELSE (ARRAY['triggered', 'confirmed', 'page_cycle', 'lamp_changed', 'deactivated',
                        'config_changed', 'notification_sent', 'acknowledged'])[1 + n % 8] END,
       CASE WHEN n % 10000 = 1 THEN '999' ELSE (100 + n % 200)::text END,
       CASE WHEN n % 10000 = 2 THEN 'Rare' ELSE 'Department ' || (n % 20) END,
       jsonb_build_object('n', n)
FROM generate_series(1, $2::int) AS n
"""


# A page may go through at most this many of the 100,000 rows (found: 51 when read from its
# filter's index, about 8 per match of a common value read from the time index).
MAX_ROWS_READ = 2_500


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(
    connection: Any, wanted: HistoryFilter, after: EventKey | None
) -> list[dict[str, Any]]:
    """The page's plan as PostgreSQL ran it (EXPLAIN ANALYZE), node by node."""
    statement, arguments = page_query(wanted, after=after, newest_first=True, limit=51)
    text = await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *arguments)
    return list(plan_nodes(json.loads(text)[0]["Plan"]))


def rows_read(nodes: list[dict[str, Any]]) -> int:
    """The most rows any scan of the plan went through (returned or filtered out)."""
    return max(
        int(node["Actual Rows"]) * int(node["Actual Loops"])
        + int(node.get("Rows Removed by Filter", 0))
        + int(node.get("Rows Removed by Index Recheck", 0))
        for node in nodes
        if "Scan" in node["Node Type"]
    )


async def test_pages_of_100k_events_come_from_an_index_in_order(db_pool) -> None:
    stores = Stores.over(db_pool)
    await db_pool.execute(SEED_100K, START, EVENTS)
    async with db_pool.acquire() as connection:
        # Statistics of every row rather than of a random sample: the same plans each run.
        await connection.execute("SET default_statistics_target = 1000")
        await connection.execute("ANALYZE alarm_events")
        await connection.execute("RESET default_statistics_target")
    until = START + timedelta(seconds=7 * (EVENTS + 1))
    whole = history_filter(START, until)
    # A cursor in the middle of the history: page 1,000 of 2,000.
    deep = EventKey(START + timedelta(seconds=7 * EVENTS // 2), EVENTS // 2)
    # name: (filter, the index it must be read from in order; None: whichever the planner
    # prefers: for a common value, the time index read until 51 match is as good)
    cases: dict[str, tuple[HistoryFilter, str | None]] = {
        "all": (whole, "alarm_events_time"),
        "one day": (
            history_filter(START + timedelta(days=2), START + timedelta(days=3)),
            "alarm_events_time",
        ),
        "common kind": (history_filter(START, until, kind="acknowledged"), None),
        "common department": (history_filter(START, until, department="Department 7"), None),
        "common extension": (history_filter(START, until, extension="150"), None),
        "rare kind": (history_filter(START, until, kind="escalated"), None),
        "rare department": (history_filter(START, until, department="Rare"), None),
        "rare extension": (history_filter(START, until, extension="999"), None),
        "kind+department": (
            history_filter(START, until, kind="page_cycle", department="Department 2"),
            None,
        ),
    }
    touched: dict[str, int] = {}
    async with db_pool.acquire() as connection:
        for mode in ("force_custom_plan", "force_generic_plan"):
            await connection.execute(f"SET plan_cache_mode = {mode}")
            for name, (wanted, index) in cases.items():
                for label, after in (("first", None), ("deep", deep)):
                    nodes = await explain(connection, wanted, after)
                    described = f"{name}, {mode}, {label}: {nodes}"
                    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], described
                    # Whatever the plan, a page goes through a small part of the table.
                    touched[f"{name} {label} ({mode[6:-5]})"] = read = rows_read(nodes)
                    assert read <= MAX_ROWS_READ, described
                    if index is not None:
                        scans = [n for n in nodes if n.get("Relation Name") == "alarm_events"]
                        assert [n["Node Type"] for n in scans] == ["Index Scan"], described
                        assert scans[0]["Index Name"] == index, described
                        assert scans[0]["Scan Direction"] == "Backward", described
        await connection.execute("RESET plan_cache_mode")
    print("\nrows a page of 50 went through:", touched)

    # The benchmark figures: printed, not asserted (the machine is shared).
    timings: dict[str, float] = {}
    for name, (wanted, _) in cases.items():
        for label, after in (("first", None), ("deep", deep)):
            runs = []
            for _ in range(20):
                started = time.perf_counter()
                page = await stores.history.events(wanted, after=after, limit=51)
                runs.append(time.perf_counter() - started)
            assert page, f"{name} {label} page is empty"
            timings[f"{name} {label}"] = statistics.median(runs) * 1000
    started = time.perf_counter()
    export = HistoryExport(stores, whole, "csv")
    size = len(await export.text())
    exported = time.perf_counter() - started
    assert export.count == EVENTS
    print(
        f"\nhistory page of 50 among {EVENTS:,} events, median of 20 (ms): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in timings.items())
        + f"\nCSV export of {EVENTS:,} events: {exported:.2f} s, {size / 1e6:.1f} MB"
    )


async def test_a_10k_department_text_is_recorded_and_found(db_pool) -> None:
    """The indexes hold the first 100 characters: an event with a longer text is written,
    and a filter of that full text finds it (and no event that shares only the start)."""
    stores = Stores.over(db_pool)
    long_name = "W" * 10_000
    for name in (long_name, long_name[:100], long_name[:-1] + "X"):
        await stores.history.append_event(HistoryEvent(EventKind.TRIGGERED, None, "101", name))
    now = datetime.now(UTC)
    wanted = HistoryFilter(now - timedelta(hours=1), now + timedelta(hours=1), long_name)
    [found] = await stores.history.events(wanted)
    assert found.department == long_name


async def test_the_migration_leaves_no_duplicate_index(db_pool) -> None:
    indexes = await db_pool.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'alarm_events' ORDER BY indexname"
    )
    definitions = [row["indexdef"].split(" USING ")[1] for row in indexes]
    assert len(definitions) == len(set(definitions))
    assert "btree (occurred_at)" not in definitions


def test_the_filter_texts_are_arguments_not_sql() -> None:
    """page_query's texts carry no value: the filter's texts are arguments."""
    hostile = "'; DROP TABLE alarm_events; --"
    statement, arguments = page_query(
        HistoryFilter(START, START + timedelta(days=1), hostile, hostile, "triggered"),
        after=EventKey(START, 5),
        newest_first=True,
        limit=51,
    )
    assert hostile not in statement
    assert arguments.count(hostile) == 2
    assert arguments.count("triggered") == 1
