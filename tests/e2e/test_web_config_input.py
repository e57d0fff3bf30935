"""The configuration pages under hostile input and the wrong role, in a real browser.

Every field of every configuration form (and the history's filters) gets quotes, line
breaks, ``<script>``, an ``onerror`` image, 10 kB of text and a NUL byte, posted with the
session's own CSRF token as the browser's form would: each is stored literally (and
shown escaped: no script runs, no dialog opens, no element appears) or refused with a
message next to its field, never a 500. A PIN is never sent back. A viewer and an
operator see no configuration link and get 403 on every configuration POST."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Dialog, Page

from fastagi.admin import deactivators, departments, paging
from fastagi.store import Stores
from tests.browser import login, open_page
from tests.console import USERS, add_users, console_over, web_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# window.__xss is set by any of these that runs; an alert would open a dialog.
HOSTILE = {
    "quotes": 'O\'Brien "the" `ward`\\',
    "newline": "first\nsecond\r\nthird",
    "script": "<script>window.__xss = 1; alert(1)</script>",
    "image": '"><img src=x onerror="window.__xss = 2; alert(2)">',
    "10 kB": "W" * 10_000,
    "NUL": "nul\0byte",
}
BY: dict[str, Any] = {"by": "test"}


def csrf_of(html: str) -> str:
    [token] = set(re.findall(r'name="csrf_token" value="([^"]+)"', html))
    return str(token)


@dataclass
class Target:
    """A form (path) and what its fields hold when they are not the one under test."""

    path: str
    fields: dict[str, str]
    # Where what it stores is shown.
    shown_on: str
    secret: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


async def seed(stores: Stores) -> tuple[int, int]:
    """A paging group with a device, a department mapped to 101, a deactivator 150."""
    group = await paging.add_paging_group(stores, "ER", **BY)
    await paging.add_paging_device(stores, "ER", "PJSIP/201", **BY)
    ward = await departments.add_department(stores, "Ward", paging_group="ER", **BY)
    await departments.map_extensions(stores, "Ward", "101", **BY)
    await deactivators.set_deactivator(stores, "150", "2580", **BY)
    return ward.id, group.id


def targets(ward: int, group: int) -> list[Target]:
    return [
        Target(
            "/config/departments",
            {"name": "Lab", "interval_seconds": "30", "paging_group": str(group)},
            "/config/departments",
        ),
        Target(
            f"/config/departments/{ward}",
            {"new_name": "Ward", "interval_seconds": "20", "paging_group": str(group)},
            "/config/departments",
        ),
        Target(
            f"/config/departments/{ward}/map", {"pattern": "102"}, f"/config/departments/{ward}"
        ),
        Target(
            f"/config/departments/{ward}/unmap", {"pattern": "101"}, f"/config/departments/{ward}"
        ),
        Target(f"/config/departments/{ward}/remove", {"confirm": "no"}, "/config/departments"),
        Target("/config/paging", {"name": "Lab phones"}, "/config/paging"),
        Target(f"/config/paging/{group}/remove", {"confirm": "no"}, "/config/paging"),
        Target(f"/config/paging/{group}/devices", {"device": "PJSIP/202"}, "/config/paging"),
        Target(f"/config/paging/{group}/devices/remove", {"device": "PJSIP/9"}, "/config/paging"),
        Target(
            "/config/deactivators",
            {"extension": "151", "pin": "864209753102", "pin_again": "864209753102"},
            "/config/deactivators",
            secret=("pin", "pin_again"),
        ),
        Target(
            "/config/deactivators/150/pin",
            {"pin": "975310864221", "pin_again": "975310864221"},
            "/config/deactivators",
            secret=("pin", "pin_again"),
        ),
        Target("/config/interval", {"seconds": "45"}, "/config/policy"),
        Target(
            "/config/policy",
            {
                "no_answer_policy": "cancel",
                "confirmation_attempts": "3",
                "pin_attempts": "3",
                "lockout_seconds": "300",
            },
            "/config/policy",
        ),
    ]


async def snapshot(stores: Stores, pool: Any) -> list[Any]:
    """Everything the configuration forms can change."""
    return [
        await stores.directory.list_departments(),
        await stores.directory.list_paging_groups(),
        await pool.fetch("SELECT extension, pin_hash FROM deactivators ORDER BY extension"),
        await stores.policy.load_settings(),
    ]


def watch_dialogs(page: Page) -> list[Dialog]:
    """Every dialog the page opens (an alert would be a script that ran). A function of
    its own: Playwright cannot wrap a bound builtin such as ``list.append``."""
    dialogs: list[Dialog] = []

    def opened(dialog: Dialog) -> None:
        dialogs.append(dialog)

    page.on("dialog", opened)
    return dialogs


async def no_script_ran(page: Page, dialogs: list[Dialog], where: str) -> None:
    assert dialogs == [], where
    assert await page.evaluate("window.__xss === undefined"), where
    # The only images and scripts are the console's own.
    assert await page.locator("img").count() == 0, where
    sources = await page.locator("script").evaluate_all("s => s.map(e => e.src)")
    assert all(src.startswith(f"{page.url.split('/')[0]}//") for src in sources), where
    assert all("/static/" in src for src in sources), where


def escaped(body: str) -> bool:
    """No hostile markup in a page as the server sent it: the browser gets it as text."""
    return "<script>window" not in body and "<img" not in body


async def test_hostile_input_in_every_field_is_stored_literally_or_refused(
    browser, database_dsn, db_pool
) -> None:
    stores = Stores.over(db_pool)
    await add_users(stores)
    ward, group = await seed(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        dialogs = watch_dialogs(page)
        await login(page, "ada", USERS["ada"][1])
        await page.goto("/config/departments")
        token = csrf_of(await page.content())
        outcomes: dict[str, int] = {}
        for target in targets(ward, group):
            for name in target.fields:
                for label, value in HOSTILE.items():
                    before = await snapshot(stores, db_pool)
                    form: dict[str, str | float | bool] = {
                        **target.fields,
                        name: value,
                        "csrf_token": token,
                    }
                    answer = await page.request.post(target.path, form=form, max_redirects=0)
                    where = f"{target.path} {name}={label}"
                    outcomes[where] = answer.status
                    assert answer.status in (303, 400), where
                    body = await answer.text()
                    assert escaped(body), where
                    # A PIN, typed or hostile, is never sent back.
                    for secret in target.secret:
                        assert str(form[secret]) not in body, where
                    if answer.status == 400:
                        assert "Error:" in body, where
                        assert await snapshot(stores, db_pool) == before, where
                    else:
                        await page.goto(target.shown_on)
                        await no_script_ran(page, dialogs, where)
        # What was stored is stored literally (the names: the admin functions accept any
        # text but a NUL, up to 200 characters), and every page shows it as text.
        names = {d.name for d in await stores.directory.list_departments()}
        groups = {g.name for g in await stores.directory.list_paging_groups()}
        for label in ("quotes", "newline", "script", "image"):
            assert HOSTILE[label].strip() in names, label
            assert HOSTILE[label].strip() in groups, label
        assert not {HOSTILE["10 kB"], HOSTILE["NUL"]} & (names | groups)
        pages = ["/config/departments", "/config/paging", "/config/deactivators", "/history"]
        pages += [f"/config/departments/{d.id}" for d in await stores.directory.list_departments()]
        for path in pages:
            await page.goto(path)
            await no_script_ran(page, dialogs, path)
            assert escaped(await page.content()), path
        await page.goto("/config/paging")
        shown = await page.locator("main").inner_text()
        assert HOSTILE["script"] in shown
        assert HOSTILE["image"] in shown
        counts = {s: sum(1 for v in outcomes.values() if v == s) for s in set(outcomes.values())}
        print(f"\n{len(outcomes)} hostile posts, answered: {counts}")


@pytest.mark.parametrize("label", list(HOSTILE))
async def test_hostile_history_filters_and_lookups_are_refused_or_shown_escaped(
    browser, database_dsn, db_pool, label: str
) -> None:
    stores = Stores.over(db_pool)
    await add_users(stores)
    await seed(stores)
    value = HOSTILE[label]
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        dialogs = watch_dialogs(page)
        await login(page, "ada", USERS["ada"][1])
        for path in ("/history", "/history/export", "/config/departments", "/config/lookup.json"):
            names = ["extension"] if "departments" in path or "lookup" in path else [
                "since", "until", "department", "extension", "kind", "before", "after", "format"
            ]  # fmt: skip
            for name in names:
                answer = await page.request.get(path, params={name: value})
                where = f"{path} {name}={label}"
                assert answer.status in (200, 400), where
                body = await answer.text()
                if len(value) > 8000:  # longer than aiohttp takes a request line: 400 at once
                    assert answer.status == 400, where
                    continue
                # HTML escapes it; other types are never read as HTML (nosniff).
                html = answer.headers["content-type"].startswith("text/html")
                assert escaped(body) if html else True, where
                assert answer.headers["x-content-type-options"] == "nosniff", where
        # In the browser: the filter form keeps what was typed, escaped; nothing runs.
        await page.goto("/history?" + urlencode({"department": value[:150], "kind": value[:150]}))
        await no_script_ran(page, dialogs, "history")
        assert escaped(await page.content())
        # Refused next to its field (the department if it is refused, else the kind).
        field = "department" if "\0" in value else "kind"
        assert "Error:" in await page.locator(f"#filter-{field}-error").inner_text()
        assert await page.locator(f"#filter-{field}").get_attribute("aria-invalid") == "true"
        assert await page.locator("#filter-department").input_value() == value[:150].replace(
            "\0", "\ufffd"
        ).replace("\r\n", "").replace("\n", "")


@pytest.mark.parametrize("user", ["vera", "otto"])
async def test_a_viewer_or_operator_sees_no_configuration_and_may_post_none(
    browser, database_dsn, db_pool, user: str
) -> None:
    stores = Stores.over(db_pool)
    await add_users(stores)
    ward, group = await seed(stores)
    async with console_over(db_pool, web_settings(database_dsn)) as console:
        page = await open_page(browser, console.url)
        await login(page, user, USERS[user][1])
        nav = page.get_by_role("navigation", name="Main")
        assert await nav.get_by_role("link", name="History").count() == 1
        assert await nav.get_by_role("link", name="Configuration").count() == 0
        assert await page.locator('a[href^="/config"]').count() == 0
        # History is theirs to read.
        assert (await page.goto("/history")) is not None
        assert await page.get_by_role("heading", name="History").count() == 1
        token = csrf_of(await page.content())
        before = await snapshot(stores, db_pool)
        gets = [
            "/config",
            "/config/departments",
            f"/config/departments/{ward}",
            f"/config/departments/{ward}/announcement.wav",
            "/config/lookup.json",
            "/config/paging",
            "/config/deactivators",
            "/config/policy",
            "/config/settings",
        ]
        for path in gets:
            answer = await page.request.get(path, max_redirects=0)
            assert answer.status == 403, path
        for target in targets(ward, group):
            # The form an admin's page posts, with this user's own valid token.
            form: dict[str, str | float | bool] = {**target.fields, "csrf_token": token}
            answer = await page.request.post(target.path, form=form, max_redirects=0)
            assert answer.status == 403, target.path
            assert "admin" in await answer.text()
        for path in (f"/config/paging/{group}/remove", "/config/deactivators/150/remove",
                     "/config/deactivators/150/unlock"):  # fmt: skip
            answer = await page.request.post(path, form={"csrf_token": token}, max_redirects=0)
            assert answer.status == 403, path
        assert await snapshot(stores, db_pool) == before
        kinds = await db_pool.fetch(
            "SELECT details->>'by' AS by FROM alarm_events WHERE kind = 'config_changed'"
        )
        assert {row["by"] for row in kinds} <= {"test"}

        # An admin sees the link, and the same POST works.
        admin = await open_page(browser, console.url)
        await login(admin, "ada", USERS["ada"][1])
        await (
            admin.get_by_role("navigation", name="Main")
            .get_by_role("link", name="Configuration")
            .click()
        )
        await admin.get_by_role("heading", name="Departments and extensions").wait_for()
        answer = await admin.request.post(
            "/config/interval",
            form={"seconds": "45", "csrf_token": csrf_of(await admin.content())},
            max_redirects=0,
        )
        assert answer.status == 303
        assert (await stores.policy.load_settings()).default_interval_seconds == 45
