"""The console's users page in a real browser: an admin adds an operator, demotes and
removes them while they are logged in elsewhere; viewers and operators get 403; hostile
names are refused and shown escaped; an admin cannot demote or remove themselves;
passwords are never sent back; the page works with the keyboard alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page

from fastagi.admin import users
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ADA = USERS["ada"][1]


async def raise_alarm(stores: Stores, extension: str = "155") -> int:
    """An active alarm row, as a panic call leaves it (no server pages it here)."""
    event = HistoryEvent(EventKind.ACTIVATED, None, extension, "Ward", {"uniqueid": extension})
    alarm, _ = await stores.alarms.activate(
        f"extension:{extension}", None, "Ward", extension, [event]
    )
    return alarm.id


async def config_changes(stores: Stores) -> list[tuple[str, str, str]]:
    """(action, by, name) of every ``config_changed`` event, oldest first."""
    now = datetime.now(UTC)
    events = await stores.history.history(now - timedelta(hours=1), now + timedelta(hours=1))
    return [
        (e.details["action"], e.details["by"], e.details.get("name", ""))
        for e in events
        if e.kind == "config_changed"
    ]


def csrf_of(html: str) -> str:
    [token] = set(re.findall(r'name="csrf_token" value="([^"]+)"', html))
    return str(token)


async def submit(page: Page, button: str) -> None:
    async with page.expect_navigation():
        await page.get_by_role("button", name=button, exact=True).click()


async def add_with_the_form(page: Page, name: str, role: str, password: str) -> None:
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Role", exact=True).select_option(role)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_label("Password again", exact=True).fill(password)
    await submit(page, "Add user")


async def test_an_admin_adds_demotes_and_removes_an_operator(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", ADA, by="test")
    alarm_id = await raise_alarm(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        admin = await open_page(browser, console.url)
        await login(admin, "ada", ADA)
        async with admin.expect_navigation():
            await admin.get_by_role("link", name="Users", exact=True).click()
        assert await admin.title() == "Users · fastagi-panic"
        await add_with_the_form(admin, "olga", "operator", "olga-password")
        assert await admin.get_by_role("status").inner_text() == "User added."
        card = admin.locator("#user-olga")
        assert await card.locator(".role").inner_text() == "operator"
        assert await card.locator(".last-login").inner_text() == "none yet"

        # The operator, in a browser context of their own: actions, but no Users link.
        operator = await open_page(browser, console.url)
        await login(operator, "olga", "olga-password")
        deactivate = operator.get_by_role("button", name=f"Deactivate alarm {alarm_id}")
        await deactivate.wait_for()
        assert await operator.get_by_role("link", name="Users", exact=True).count() == 0
        await admin.reload()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", await _last_login(admin))

        # Demoted to viewer: their next page has no action at all.
        await admin.get_by_label("Role of olga").select_option("viewer")
        await submit(admin, "Change role of olga")
        assert await admin.locator("#user-olga .role").inner_text() == "viewer"
        await operator.reload()
        await operator.locator(f"#alarm-{alarm_id}").wait_for()
        for action in (f"Deactivate alarm {alarm_id}", "Page the announcement now", "Set interval"):
            assert await operator.get_by_role("button", name=action).count() == 0
        assert "olga (viewer)" in await operator.locator(".who").inner_text()

        # Removed, after a confirmation: the open board leaves for the login at once
        # (its stream is woken, not left to its 10 s ping), and so does the next request.
        async with admin.expect_navigation():
            await admin.get_by_role("link", name="Remove olga…").click()
        assert await admin.get_by_role("heading", name="Remove olga?").is_visible()
        await submit(admin, "Remove olga")
        assert await admin.get_by_role("status").inner_text() == (
            "User removed; their open sessions have ended."
        )
        assert await admin.locator("#user-olga").count() == 0
        await operator.wait_for_url("**/login?next=/", timeout=3000)
        await operator.goto("/")
        assert "/login" in operator.url
        await operator.goto("/alarms/1")
        assert "/login" in operator.url

    assert await config_changes(stores) == [
        ("user add", "test", "ada"),
        ("user add", "web:ada", "olga"),
        ("user role", "web:ada", "olga"),
        ("user remove", "web:ada", "olga"),
    ]
    assert await stores.alarms.is_active(alarm_id)


async def _last_login(page: Page) -> str:
    return await page.locator("#user-olga .last-login").inner_text()


async def test_viewers_and_operators_get_no_link_and_403(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    before = await config_changes(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        for name in ("vera", "otto"):
            page = await open_page(browser, console.url)
            await login(page, name, USERS[name][1])
            assert await page.get_by_role("link", name="Users", exact=True).count() == 0
            token = csrf_of(await page.content())
            for path in ("/users", "/users/ada/remove"):
                answer = await page.request.get(path, max_redirects=0)
                assert (answer.status, await answer.text()) == (403, "This needs the admin role.")
            posts: list[tuple[str, dict[str, str | float | bool]]] = [
                (
                    "/users",
                    {
                        "name": "mal",
                        "role": "admin",
                        "password": "mal-pw-1",
                        "password_again": "mal-pw-1",
                    },
                ),
                ("/users/ada/role", {"role": "viewer"}),
                ("/users/ada/password", {"password": "owned-pw-1", "password_again": "owned-pw-1"}),
                ("/users/ada/remove", {}),
                ("/users/nobody/remove", {}),
            ]
            for path, form in posts:
                answer = await page.request.post(
                    path, form={**form, "csrf_token": token}, max_redirects=0
                )
                assert answer.status == 403, path
    assert await config_changes(stores) == before
    assert [(u.name, u.role) for u in await users.list_users(stores)] == [
        ("ada", "admin"),
        ("otto", "operator"),
        ("vera", "viewer"),
    ]
    await users.authenticate(
        stores, "ada", ADA, address="x", settings=web_settings(database_dsn).web
    )  # her password is unchanged


HOSTILE = {
    "quotes": "o'brien\"x",
    "script": "<script>window.__owned = 1</script>",
    "long": "x" * 10_000,
}


async def test_hostile_names_are_refused_and_shown_escaped(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", ADA, by="test")
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, "ada", ADA)
        await page.goto("/users")
        scripts = await page.locator("script").count()
        for label, hostile in HOSTILE.items():
            name = page.get_by_label("User name")
            # What a person could not type (maxlength), a crafted page could send.
            await name.evaluate(
                "(e, v) => { e.removeAttribute('maxlength'); e.value = v; }", hostile
            )
            await page.get_by_label("Password", exact=True).fill("typed-secret-1")
            await page.get_by_label("Password again", exact=True).fill("typed-secret-1")
            async with page.expect_response(lambda r: r.request.method == "POST") as posted:
                await submit(page, "Add user")
            answer = await posted.value
            assert answer.status == 400, label
            # The input kept as typed, the refusal beside it, nothing run, no password.
            assert await name.input_value() == hostile, label
            error = page.locator("#add-name-error")
            assert (await error.inner_text()).startswith("Error: bad user name"), label
            assert len(await error.inner_text()) < 400
            assert await name.get_attribute("aria-invalid") == "true"
            assert await name.evaluate("(e) => e === document.activeElement")
            assert await page.get_by_label("Password", exact=True).input_value() == ""
            served = await answer.text()
            assert "typed-secret-1" not in served
            assert await page.locator("script").count() == scripts
            assert await page.evaluate("() => window.__owned") is None
            if label == "script":
                assert 'value="&lt;script&gt;window.__owned = 1&lt;/script&gt;"' in served
                assert "bad user name &#39;&lt;script&gt;window" in served
            if label == "quotes":
                assert 'value="o&#39;brien&#34;x"' in served

        # A newline cannot be typed into a one-line field; sent anyway, it is refused and
        # quoted escaped (\n), so it never starts a line of its own.
        token = csrf_of(await page.content())
        form: dict[str, str | float | bool] = {
            "csrf_token": token,
            "name": "eve\nadmin",
            "role": "admin",
            "password": "typed-secret-2",
            "password_again": "typed-secret-2",
        }
        reply = await page.request.post("/users", form=form, max_redirects=0)
        assert reply.status == 400
        text = await reply.text()
        assert "bad user name &#39;eve\\nadmin&#39;" in text
        assert "typed-secret-2" not in text
        # A name in a path that no user can have is no page.
        for path in ("/users/%3Cscript%3E/remove", "/users/a%0Ab/remove", "/users/.x/remove"):
            assert (await page.request.get(path)).status == 404
    assert [u.name for u in await users.list_users(stores)] == ["ada"]


async def test_an_admin_cannot_demote_or_remove_themselves(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", ADA, by="test")
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, "ada", ADA)
        await page.goto("/users")
        own = page.locator("#user-ada")
        assert "(you)" in await own.locator("h3").inner_text()
        assert await own.get_by_label("Role of ada").count() == 0
        assert await own.get_by_role("link", name="Remove ada…").count() == 0
        # Sent anyway (a stale page, a crafted form): refused, and said on her card.
        token = csrf_of(await page.content())
        answer = await page.request.post(
            "/users/ada/role", form={"csrf_token": token, "role": "viewer"}, max_redirects=0
        )
        assert answer.status == 400
        assert "you cannot take away your own admin role" in await answer.text()
        await page.goto("/users/ada/remove")
        assert await page.get_by_role("button", name="Remove ada").count() == 0
        assert "you cannot remove yourself" in await page.get_by_role("alert").inner_text()
        answer = await page.request.post(
            "/users/ada/remove", form={"csrf_token": token}, max_redirects=0
        )
        assert answer.status == 400
        assert "you cannot remove yourself" in await answer.text()

        # With a second admin, each may demote the other, but never the last one.
        await page.goto("/users")
        await add_with_the_form(page, "bea", "admin", "bea-password")
        await page.get_by_label("Role of bea").select_option("operator")
        await submit(page, "Change role of bea")
        assert await page.locator("#user-bea .role").inner_text() == "operator"
    assert [(u.name, u.role) for u in await users.list_users(stores)] == [
        ("ada", "admin"),
        ("bea", "operator"),
    ]


async def test_a_new_password_is_never_shown_back(browser, database_dsn, db_pool):
    stores = Stores.over(db_pool)
    await add_users(stores)
    settings = web_settings(database_dsn)
    async with console_over(db_pool, settings) as console:
        otto = await open_page(browser, console.url)
        await login(otto, "otto", USERS["otto"][1])
        page = await open_page(browser, console.url)
        await login(page, "ada", ADA)
        await page.goto("/users")
        new, again = (
            page.get_by_label("New password for otto", exact=True),
            page.get_by_label("New password for otto again", exact=True),
        )
        await new.fill("otto-new-password")
        await again.fill("otto-other-password")
        await submit(page, "Set password of otto")
        error = page.locator("#password-otto-password_again-error")
        assert (
            await error.inner_text() == "Error: the passwords differ: type the same password twice"
        )
        assert await again.evaluate("(e) => e === document.activeElement")
        assert (await new.input_value(), await again.input_value()) == ("", "")
        html = await page.content()
        assert "otto-new-password" not in html
        assert "otto-other-password" not in html
        await new.fill("otto-new-password")
        await again.fill("otto-new-password")
        await submit(page, "Set password of otto")
        assert "Password set" in await page.get_by_role("status").inner_text()
        assert "otto-new-password" not in await page.content()
        # Otto's open session has ended; the new password lets him in again.
        await otto.wait_for_url("**/login?next=/", timeout=3000)
        await login(otto, "otto", "otto-new-password")
        assert otto.url == console.url + "/"
    now = datetime.now(UTC)
    events = await stores.history.history(now - timedelta(hours=1), now + timedelta(hours=1))
    assert not [e for e in events if "otto-new-password" in str(e.details)]
    assert ("user passwd", "web:ada", "otto") in await config_changes(stores)


async def test_the_users_page_with_the_keyboard_alone_and_at_200_percent(
    browser, database_dsn, db_pool
):
    """Every field has a label; a user is added and removed with Tab, typing, arrows and
    Enter; a refused field gets the focus; at 200 % zoom nothing scrolls sideways."""
    stores = Stores.over(db_pool)
    await add_users(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        context = await browser.new_context(
            base_url=console.url, viewport={"width": 640, "height": 800}, device_scale_factor=2
        )
        page = await context.new_page()
        await login(page, "ada", ADA)
        await page.goto("/users")
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll("input:not([type=hidden]), select")]
                 .filter((e) => !e.labels.length || !e.labels[0].textContent.trim())
                 .map((e) => e.id || e.name)"""
        )
        assert unlabelled == []
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0

        async def tab_to(label: str) -> None:
            target = page.get_by_label(label, exact=True)
            for _ in range(80):
                await page.keyboard.press("Tab")
                if await target.evaluate("(e) => e === document.activeElement"):
                    return
            raise AssertionError(f"{label!r} is not reachable with Tab")

        await tab_to("User name")
        await page.keyboard.type("kai")
        await page.keyboard.press("Tab")  # the role: viewer
        await page.keyboard.press("ArrowDown")  # operator
        await page.keyboard.press("Tab")
        await page.keyboard.type("kai-password")
        await page.keyboard.press("Tab")
        await page.keyboard.type("kai-passwrod")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        again = page.get_by_label("Password again", exact=True)
        assert await again.evaluate("(e) => e === document.activeElement")
        assert await page.get_by_label("User name").input_value() == "kai"
        assert await page.get_by_label("Role", exact=True).input_value() == "operator"
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.type("kai-password")
        await page.keyboard.press("Tab")
        await page.keyboard.type("kai-password")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert await page.locator("#user-kai .role").inner_text() == "operator"

        remove = page.get_by_role("link", name="Remove kai…")
        for _ in range(80):
            await page.keyboard.press("Tab")
            if await remove.evaluate("(e) => e === document.activeElement"):
                break
        else:
            raise AssertionError("the removal is not reachable with Tab")
        outline = await remove.evaluate("(e) => getComputedStyle(e).outlineStyle")
        assert outline != "none"
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        await tab_to_button(page, "Remove kai")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
    assert "kai" not in [u.name for u in await users.list_users(stores)]


async def tab_to_button(page: Page, name: str) -> None:
    button = page.get_by_role("button", name=name, exact=True)
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await button.evaluate("(e) => e === document.activeElement"):
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")
