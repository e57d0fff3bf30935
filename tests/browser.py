"""pytest plugin: a real browser (Debian's Chromium driven by Playwright) for the web
console's tests. Listed in tests/conftest.py ``pytest_plugins``.

``browser`` (function) -> playwright Browser
    Chromium launched from ``/usr/bin/chromium`` (``playwright install`` needs the
    network; the Makefile installs the Debian package). ``--no-sandbox`` because the
    tests run as root; autoplay allowed, so the board's beep needs no click.
``open_page(browser, base_url, ...)`` -> Page
    A fresh context (its own cookies) with notifications granted and two spies: every
    beep (an oscillator started) and every notification shown are counted in
    ``window.__alerts`` ({"beeps": n, "notifications": [titles]}).
``login(page, name, password)``
    Through the login form, as a person does; returns once the answer has loaded.

Pages and contexts close with the browser at the end of the test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "chromium"

# Counts what the board does to alert: oscillators started, notifications shown.
ALERT_SPIES = """
window.__alerts = {beeps: 0, notifications: []};
(() => {
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    window.__alerts.beeps += 1;
    return start.apply(this, args);
  };
  const Original = window.Notification;
  if (Original) {
    const Spy = function (title, options) {
      window.__alerts.notifications.push(title);
      return new Original(title, options);
    };
    Object.defineProperty(Spy, "permission", {get: () => Original.permission});
    Spy.requestPermission = (...args) => Original.requestPermission(...args);
    window.Notification = Spy;
  }
})();
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which(CHROMIUM)
    if executable is None:
        pytest.fail(
            "no chromium: install the Debian package (make test does: APT_PACKAGES)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Browser, base_url: str, *, notifications: bool = True, spies: bool = True
) -> Page:
    context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    if notifications:
        await context.grant_permissions(["notifications"], origin=base_url)
    if spies:
        await context.add_init_script(ALERT_SPIES)
    return await context.new_page()


async def login(page: Page, name: str, password: str) -> None:
    await page.goto("/login")
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(password)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Log in").click()
