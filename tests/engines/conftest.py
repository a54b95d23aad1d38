"""The headless browser the report and eval-page tests look at pages with."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the OS package scripts/setup-env installs), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:  # CI must run these: no browser is a failure, not a skip
        pytest.fail("no chromium on PATH: scripts/setup-env installs Debian's chromium package")
    with sync_playwright() as playwright:
        # No background traffic: every request the page makes is then one the test sees.
        flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
        launched = playwright.chromium.launch(executable_path=executable, args=[*flags, "--disable-sync"])
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser):
    """Opens a page at a URL; the page records console errors and warnings (`problems`) and every
    request (`requests`). Its browser context is closed after the test."""
    contexts = []

    def opened_at(url: str):
        # Without the page's Content-Security-Policy, which refuses the test's own evaluated checks: the
        # hostile-caption tests then prove the page never renders text as HTML, with no policy to catch it.
        context = browser.new_context(bypass_csp=True)
        contexts.append(context)
        page = context.new_page()
        page.problems, page.requests = [], []
        page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(m.text))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on("request", lambda r: page.requests.append(r.url))
        page.goto(url)
        return page

    yield opened_at
    for context in contexts:
        context.close()
