"""The board's live feed: an alarm raised or ended anywhere (another server, the CLI)
reaches every open board within a second through PostgreSQL's NOTIFY, one listening
connection serves every browser, and a lost stream is said plainly and recovered."""

from __future__ import annotations

import time

import pytest

from fastagi.admin.alarms import deactivate_alarm
from fastagi.store import Stores
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings
from tests.e2e.test_web_security import raise_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

LOST = "Live updates lost — reconnecting"


async def count_shown(page, count: int, within: float = 10.0) -> float:
    await page.wait_for_function(
        "(n) => document.body.dataset.alarms === n",
        arg=str(count),
        timeout=within * 1000,
        polling="raf",
    )
    return time.time()


async def test_changes_reach_every_board_within_a_second(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        pages = []
        for name in ("vera", "otto", "ada"):
            page = await open_page(browser, console.url)
            await login(page, name, USERS[name][1])
            await page.locator('#feed-state[data-state="live"]').wait_for(state="attached")
            pages.append(page)
        reads = console.feed.reads
        raised = time.time()
        alarm_id = await raise_alarm(stores)
        shown = [await count_shown(page, 1) - raised for page in pages]
        await deactivate_alarm(stores, alarm_id, reason="test", by="cli:test")
        row = await stores.alarms.get_alarm(alarm_id)
        assert row is not None
        assert row.deactivated_at is not None
        ended = row.deactivated_at.timestamp()
        gone = [await count_shown(page, 0) - ended for page in pages]
        print(
            "raised -> on 3 boards: " + ", ".join(f"{s * 1000:.0f}" for s in shown) + " ms; "
            "ended -> off them: " + ", ".join(f"{g * 1000:.0f}" for g in gone) + " ms; "
            f"board reads for both: {console.feed.reads - reads}"
        )
        assert max(shown) < 1.0
        assert max(gone) < 1.0
        # One read of the board per change for all three browsers, not one each: each
        # change is a few statements in one transaction, folded into one notification.
        assert console.feed.reads - reads <= 4


async def test_a_lost_stream_is_shown_and_recovered(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    settings = web_settings(database_dsn)
    async with console_over(db_pool, settings) as console:
        page = await open_page(browser, console.url)
        await login(page, "otto", USERS["otto"][1])
        state = page.locator("#feed-state")
        await page.locator('#feed-state[data-state="live"]').wait_for(state="attached")
        assert await state.is_hidden()
        port = console.port
    # The server is gone: the board says so, in words, at once.
    await page.locator('#feed-state[data-state="lost"]').wait_for(state="attached", timeout=5000)
    assert await state.inner_text() == LOST
    assert await state.is_visible()
    # Meanwhile an alarm is raised; the console comes back on its port: the board
    # reconnects by itself, says nothing any more, and shows the alarm.
    await raise_alarm(stores)
    settings.web.port = port
    async with console_over(db_pool, settings):
        await page.locator('#feed-state[data-state="live"]').wait_for(
            state="attached", timeout=10000
        )
        assert await state.is_hidden()
        await count_shown(page, 1)
        assert "ALARM ACTIVE" in await page.locator("#banner").inner_text()
