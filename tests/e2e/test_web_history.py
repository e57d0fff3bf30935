"""The console's history in a real browser: filters by period, department, extension
and kind; keyset pages walked older and back newer without a gap or a repeat; and the
CSV and JSON exports, downloaded as a person does, byte for byte what
``fastagi history export`` writes for the same filter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page

from fastagi import cli
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.web.history import PAGE_SIZE
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

WARD = 'Ward "7" <b>'
DAY = datetime(2026, 11, 2, 8, tzinfo=UTC)
SINCE, UNTIL = "2026-11-01", "2026-11-03"


async def seed(stores: Stores) -> None:
    """130 page cycles of the Ward from 101 (pairs of one instant), and others around
    them: another kind, another extension, another department, outside the period."""
    events = []
    for n in range(130):
        at = DAY + timedelta(minutes=n // 2)
        events.append(
            HistoryEvent(EventKind.PAGE_CYCLE, None, "101", WARD, {"n": n}, occurred_at=at)
        )
        if n % 10 == 0:
            events += [
                HistoryEvent(EventKind.LAMP_CHANGED, None, "101", WARD, {"n": n}, occurred_at=at),
                HistoryEvent(EventKind.PAGE_CYCLE, None, "102", WARD, {"n": n}, occurred_at=at),
                HistoryEvent(
                    EventKind.PAGE_CYCLE, None, "101", "Lab", {"x": 'a,"b"\nc'}, occurred_at=at
                ),
            ]
    for outside in (DAY - timedelta(days=3), DAY + timedelta(days=3)):
        events.append(HistoryEvent(EventKind.PAGE_CYCLE, None, "101", WARD, occurred_at=outside))
    await stores.history.append_events(events)


async def shown_ids(page: Page) -> list[int]:
    rows = await page.locator("table.history tbody tr[id]").evaluate_all(
        "rows => rows.map(r => r.id)"
    )
    return [int(row.removeprefix("event-")) for row in rows]


async def cli_export(dsn: str, path: Path, *arguments: str) -> bytes:
    # The CLI runs its own event loop: in a thread, beside the test's.
    code = await asyncio.to_thread(
        cli.main, ["history", "export", *arguments, "--output", str(path), "--dsn", dsn]
    )
    assert code == 0
    return await asyncio.to_thread(path.read_bytes)


async def download(page: Page, link: str, path: Path) -> bytes:
    async with page.expect_download() as started:
        await page.get_by_role("link", name=link, exact=True).click()
    await (await started.value).save_as(path)
    return await asyncio.to_thread(path.read_bytes)


async def test_filters_pages_and_exports_match_the_cli(
    browser, database_dsn, db_pool, tmp_path
) -> None:
    stores = Stores.over(db_pool)
    await add_users(stores)
    await seed(stores)
    expected = [
        row["id"]
        for row in await db_pool.fetch(
            "SELECT id FROM alarm_events WHERE department = $1 AND kind = 'page_cycle'"
            " AND extension = '101' AND occurred_at >= '2026-11-01' AND occurred_at < '2026-11-04'"
            " ORDER BY occurred_at DESC, id DESC",
            WARD,
        )
    ]
    assert len(expected) == 130
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, "vera", USERS["vera"][1])  # a viewer reads the history
        await page.goto("/history")
        await page.get_by_label("From", exact=True).fill(SINCE)
        await page.get_by_label("To", exact=True).fill(UNTIL)
        await page.get_by_label("Department", exact=True).fill(WARD)
        await page.get_by_label("Extension", exact=True).fill("101")
        await page.get_by_label("Kind", exact=True).select_option("page_cycle")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Show").click()

        # Older, page by page, then newer back to the first.
        pages = [await shown_ids(page)]
        while await page.get_by_role("link", name="Older →").count():
            async with page.expect_navigation():
                await page.get_by_role("link", name="Older →").first.click()
            pages.append(await shown_ids(page))
        assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 130 - 2 * PAGE_SIZE]
        assert [i for p in pages for i in p] == expected
        back = [await shown_ids(page)]
        while await page.get_by_role("link", name="← Newer").count():
            async with page.expect_navigation():
                await page.get_by_role("link", name="← Newer").first.click()
            back.append(await shown_ids(page))
        assert back == pages[::-1]
        assert await page.get_by_label("Department", exact=True).input_value() == WARD

        filters = ["--since", SINCE, "--until", UNTIL, "--department", WARD]
        filters += ["--extension", "101", "--kind", "page_cycle"]
        for label, export_format in (("CSV", "csv"), ("JSON", "json")):
            downloaded = await download(page, label, tmp_path / f"web.{export_format}")
            written = await cli_export(
                database_dsn, tmp_path / f"cli.{export_format}", *filters, "--format", export_format
            )
            assert downloaded == written, export_format
            kind = b'"page_cycle"' if export_format == "json" else b",page_cycle,"
            assert downloaded.count(kind) == 130

        # The whole period, no other filter: the Lab's quoted line break and all.
        await page.goto(f"/history?since={SINCE}&until={UNTIL}")
        assert len(await shown_ids(page)) == PAGE_SIZE
        for label, export_format in (("CSV", "csv"), ("JSON", "json")):
            downloaded = await download(page, label, tmp_path / f"all-web.{export_format}")
            written = await cli_export(
                database_dsn,
                tmp_path / f"all-cli.{export_format}",
                "--since", SINCE, "--until", UNTIL, "--format", export_format,
            )  # fmt: skip
            assert downloaded == written, export_format
            assert b"Lab" in downloaded
