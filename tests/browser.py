"""Shared headless-browser fixtures: Debian's Chromium driven by Playwright, never a downloaded
browser (`playwright install` is not used). Tests that take `page` skip, saying why, when
/usr/bin/chromium is missing (CI installs Debian's `chromium`).

Use: `from tests.browser import browser, page  # noqa: F401` in a test module, then take `page`
(a fresh context per test) and point it at `client.make_url(...)` — the test server listens on
a real port, so the browser goes through the whole HTTP stack.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("PAYSVC_TEST_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = Path(CHROMIUM).exists()
TIMEOUT_MS = 60_000  # generous: 2 cores shared by many; every wait polls, none sleeps


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # root in CI containers: no user namespaces for the sandbox; /dev/shm may be tiny
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()
