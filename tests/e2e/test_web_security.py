"""The console's guards in a real browser and over plain HTTP: roles (a viewer sees no
action, and its POST is refused), CSRF tokens, the login rate limit (429, recorded),
removed users and changed roles applying at once, the security headers, and the board
without JavaScript."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from playwright.async_api import expect

from fastagi.admin import users
from fastagi.config import WebSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.web.board import PING_SECONDS
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def raise_alarm(stores: Stores, extension: str = "155") -> int:
    """An active alarm row, as a panic call leaves it (no server pages it here)."""
    event = HistoryEvent(EventKind.ACTIVATED, None, extension, "Ward", {"uniqueid": extension})
    alarm, _ = await stores.alarms.activate(
        f"extension:{extension}", None, "Ward", extension, [event]
    )
    return alarm.id


def csrf_of(html: str) -> str:
    [token] = set(re.findall(r'name="csrf_token" value="([^"]+)"', html))
    return str(token)


async def test_a_viewer_sees_no_action_and_its_post_is_refused(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    alarm_id = await raise_alarm(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, "vera", USERS["vera"][1])
        card = page.locator(f"#alarm-{alarm_id}")
        await card.wait_for()
        assert await page.get_by_role("button", name=f"Deactivate alarm {alarm_id}").count() == 0
        assert await page.get_by_role("button", name="Page the announcement now").count() == 0
        assert await page.get_by_role("button", name="Set interval").count() == 0
        # The same POST an operator's form makes, with the viewer's valid token: refused.
        token = csrf_of(await page.content())
        forms: list[tuple[str, dict[str, str | float | bool]]] = [
            (f"/alarms/{alarm_id}/deactivate", {"reason": "no", "csrf_token": token}),
            (f"/alarms/{alarm_id}/page", {"csrf_token": token}),
            (
                "/departments/interval",
                {"department": "Ward", "interval_seconds": "5", "csrf_token": token},
            ),
        ]
        for path, form in forms:
            answer = await page.request.post(path, form=form, max_redirects=0)
            assert answer.status == 403, path
            assert "operator" in await answer.text()
        assert await stores.alarms.is_active(alarm_id)
        kinds = {e.kind for e in await stores.history.timeline(alarm_id)}
        assert "page_requested" not in kinds

        # Made an operator: the next page shows the buttons (no new login).
        await users.set_role(stores, "vera", "operator", by="test")
        await page.reload()
        assert await page.get_by_role("button", name=f"Deactivate alarm {alarm_id}").count() == 1
        # Removed: the open board's live feed logs the page out by itself (at its next
        # update or ping, board.js "logout"); a reload here would race that navigation
        # ("Not attached to an active page"), so wait for it.
        await users.remove_user(stores, "vera", by="test")
        await page.wait_for_url("**/login?next=/", timeout=(PING_SECONDS + 10) * 1000)
        # And a page the removed user's session asks for is sent to the login.
        answer = await page.request.get(
            f"{console.url}/", headers={"Accept": "text/html"}, max_redirects=0
        )
        assert answer.status == 303
        assert answer.headers["location"] == "/login?next=/"


async def test_a_post_without_the_csrf_token_is_refused(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    alarm_id = await raise_alarm(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, "otto", USERS["otto"][1])
        token = csrf_of(await page.content())
        path = f"/alarms/{alarm_id}/deactivate"
        forged: list[dict[str, str | float | bool]] = [
            {"reason": "forged"},
            {"reason": "forged", "csrf_token": "x" * 43},
        ]
        for form in forged:
            answer = await page.request.post(path, form=form, max_redirects=0)
            assert answer.status == 403
        assert await stores.alarms.is_active(alarm_id)
        # Another session's token is no better.
        other = await open_page(browser, console.url)
        await login(other, "ada", USERS["ada"][1])
        answer = await other.request.post(
            path, form={"reason": "x", "csrf_token": token}, max_redirects=0
        )
        assert answer.status == 403
        assert await stores.alarms.is_active(alarm_id)
        # With its own token the operator's POST works.
        answer = await page.request.post(
            path, form={"reason": "checked", "csrf_token": token}, max_redirects=0
        )
        assert answer.status == 303
        assert not await stores.alarms.is_active(alarm_id)


async def test_wrong_passwords_are_rate_limited_and_recorded(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    settings = web_settings(database_dsn, login_failures_per_name=3, login_failures_per_address=5)
    async with console_over(db_pool, settings) as console:
        page = await open_page(browser, console.url)
        statuses = []
        for _ in range(3):
            await login(page, "otto", "not-the-password")
            statuses.append(await page.locator("#login-message").inner_text())
        assert statuses == ["Wrong user name or password."] * 3
        # Now even the right password is refused, with HTTP 429 and a clear message.
        async with page.expect_response(lambda r: r.request.method == "POST") as response:
            await login(page, "otto", USERS["otto"][1])
        answer = await response.value
        assert answer.status == 429
        assert int(await answer.header_value("Retry-After") or 0) > 0
        message = await page.locator("#login-message").inner_text()
        assert message.startswith("Too many failed logins for this user name.")
        assert "/login" in page.url
        # Another name from the same address: 2 more failures reach the address's limit.
        for _ in range(2):
            await login(page, "ada", "wrong-again")
        await login(page, "ada", USERS["ada"][1])
        assert (await page.locator("#login-message").inner_text()).startswith(
            "Too many failed logins for this address."
        )

    events = await stores.history.history(*_today())
    failed = [e.details for e in events if e.kind == "login_failed"]
    refused = [e.details for e in events if e.kind == "login_refused"]
    assert [(d["user"], d["reason"]) for d in failed] == [("otto", "wrong password")] * 3 + [
        ("ada", "wrong password")
    ] * 2
    assert [(d["user"], d["limited"]) for d in refused] == [
        ("otto", "this user name"),
        ("ada", "this address"),
    ]
    assert all(d["address"] == "127.0.0.1" for d in failed + refused)
    assert not [e for e in events if e.kind == "login"]


def _today() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


async def test_security_headers_and_no_store(database_dsn, db_pool):
    async with (
        console_over(db_pool, web_settings(database_dsn)) as console,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(console.url + "/login") as answer:
            headers = answer.headers
            assert answer.status == 200
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        # Nothing without a login: pages redirect, the rest is refused.
        async with http.get(
            console.url + "/", allow_redirects=False, headers={"Accept": "text/html"}
        ) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/login?next=/"
        async with http.get(console.url + "/events", allow_redirects=False) as answer:
            assert answer.status == 401
        async with http.post(
            console.url + "/alarms/1/deactivate", data={"reason": "x"}, allow_redirects=False
        ) as answer:
            assert answer.status == 401
        async with http.get(console.url + "/static/style.css") as answer:
            assert answer.status == 200
        async with http.get(console.url + "/healthz") as answer:
            assert answer.status == 200


async def test_cookies_are_secure_behind_a_tls_proxy(database_dsn, db_pool):
    settings = web_settings(database_dsn, trust_proxy_headers=True)
    async with (
        console_over(db_pool, settings) as console,
        aiohttp.ClientSession() as http,
        http.get(console.url + "/login", headers={"X-Forwarded-Proto": "https"}) as answer,
    ):
        assert "Secure" in answer.headers["Set-Cookie"]
    assert WebSettings().trust_proxy_headers is False  # never by default


async def test_the_board_works_without_javascript(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    alarm_id = await raise_alarm(stores, "156")
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        context = await browser.new_context(base_url=console.url, java_script_enabled=False)
        page = await context.new_page()
        await login(page, "otto", USERS["otto"][1])
        assert "ALARM ACTIVE" in await page.locator("#banner").inner_text()
        assert await page.title() == "ALARM ACTIVE (1) · fastagi-panic"
        card = page.locator(f"#alarm-{alarm_id}")
        await card.get_by_label("Reason").fill("seen on the plain page")
        async with page.expect_navigation():
            await card.get_by_role("button", name=f"Deactivate alarm {alarm_id}").click()
        assert "No active alarm" in await page.locator("#banner").inner_text()
        assert not await stores.alarms.is_active(alarm_id)


async def test_keyboard_only_and_200_percent_zoom(browser, database_dsn, db_pool):
    """A person without a mouse reaches and uses the deactivation with Tab and Enter, the
    focus is visible, and at 200 % zoom (half the width in CSS pixels) nothing needs
    horizontal scrolling."""
    stores = Stores.over(db_pool)
    await add_users(stores)
    alarm_id = await raise_alarm(stores, "157")
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        context = await browser.new_context(
            base_url=console.url, viewport={"width": 640, "height": 800}, device_scale_factor=2
        )
        page = await context.new_page()
        await page.goto("/login")
        # The name field has the focus (autofocus). Chromium applies autofocus when it next
        # renders, which may come after goto() returned: keys typed before it were lost
        # and the login failed (fresh run r2). Wait for the focus, as a person would see it.
        await expect(page.locator("#name")).to_be_focused()
        await page.keyboard.type("otto")
        await page.keyboard.press("Tab")
        await page.keyboard.type(USERS["otto"][1])
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        await page.locator(f"#alarm-{alarm_id}").wait_for()
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        reason = page.get_by_label("Reason")
        for _ in range(30):
            await page.keyboard.press("Tab")
            if await reason.evaluate("(e) => e === document.activeElement"):
                break
        else:
            raise AssertionError("the reason field is not reachable with Tab")
        await page.keyboard.type("keyboard only")
        await page.keyboard.press("Tab")
        button = page.get_by_role("button", name=f"Deactivate alarm {alarm_id}")
        assert await button.evaluate("(e) => e === document.activeElement")
        outline = await button.evaluate("(e) => getComputedStyle(e).outlineStyle")
        assert outline != "none"
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert not await stores.alarms.is_active(alarm_id)
        [done] = await stores.alarms.recent_alarms()
        assert (done.deactivated_by, done.deactivation_reason) == ("web:otto", "keyboard only")


async def test_a_form_of_bytes_that_are_not_utf8_is_a_clear_400(database_dsn, db_pool):
    """Not a 500: the login form (public) and a logged-in POST read the form alike."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with (
        console_over(db_pool, web_settings(database_dsn)) as console,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(console.url + "/login") as answer:
            assert answer.status == 200
        async with http.post(
            console.url + "/login", data=b"name=\xff\xfe&password=x", headers=form
        ) as answer:
            login_status, login_text = answer.status, await answer.text()
    assert (login_status, login_text) == (400, "This form's data is not UTF-8 text.")
