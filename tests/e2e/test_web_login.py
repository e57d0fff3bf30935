"""The web console in a real browser: logging in and out, the roles, and the board
without any alarm."""

from __future__ import annotations

import pytest

from fastagi.store import Stores
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def test_login_board_and_logout(browser, database_dsn, db_pool) -> None:
    await add_users(Stores.over(db_pool))
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await page.goto("/")
        assert page.url.endswith("/login?next=/")  # nothing without a login
        await login(page, "otto", USERS["otto"][1])
        assert page.url == console.url + "/"
        await page.get_by_text("No active alarm").wait_for()
        await page.locator('#feed-state[data-state="live"]').wait_for(state="attached")
        assert await page.title() == "No active alarm · fastagi-panic"
        assert await page.get_by_text("otto (operator)").is_visible()
        async with page.expect_navigation():
            await page.get_by_role("button", name="Log out").click()
        assert page.url.endswith("/login")
        await page.goto("/")
        assert "/login" in page.url
