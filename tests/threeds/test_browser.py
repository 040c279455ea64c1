"""A real browser on the sandbox's 3-D Secure page: headless Chromium (Debian's `chromium`,
driven by Playwright through `executable_path`; never a downloaded browser) opens
`next_action.redirect_to_url.url`, presses Complete (or Fail), follows the redirect to the shop's
`return_url` (a local test page), and the API then shows the payment settled."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from paysvc.bootstrap import Container, build_container
from paysvc.web.app import create_app
from tests.conftest import Api, make_settings
from tests.gateways.conftest import free_port
from tests.threeds.helpers import charges, requires_action

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"browser test skipped: no Chromium at {CHROMIUM} (Debian package `chromium`; "
    ".ci/run installs it)",
)
NAVIGATION_TIMEOUT_MS = 60_000


@pytest.fixture
async def shop_page() -> AsyncIterator[str]:
    """The storefront's return page: a local test server."""

    async def done(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<h1>Back at the shop: {request.query.get('redirect_status')}</h1>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/checkout/done", done)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/checkout/done"))
    await server.close()


@pytest.fixture
async def live(database_url: str, aiohttp_client: Any) -> AsyncIterator[tuple[Api, Container]]:
    """paysvc on a real port that the sandbox's links name (PUBLIC_URL)."""
    port = free_port()
    settings = make_settings(database_url, PUBLIC_URL=f"http://127.0.0.1:{port}")
    container = build_container(settings)
    client = await aiohttp_client(
        create_app(container, own_container=False), server_kwargs={"port": port}
    )
    yield Api(client), container
    await client.close()
    await container.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _authenticate_in_browser(browser: Any, url: str, button: str) -> tuple[str, str]:
    """Open the page, check what it shows, press `button`; the final URL and its heading."""
    page = await browser.new_page()
    page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert await page.inner_text("h1") == "Confirm your payment"
    assert await page.inner_text("#amount") == "19.99 USD"
    assert "paysvc sandbox shop" in await page.inner_text("main")
    async with page.expect_navigation(url="**/checkout/done**"):
        await page.click(f"text={button}")
    heading = await page.inner_text("h1")
    final = page.url
    await page.close()
    assert violations == []  # the page works under its own policy, redirect included
    return final, heading


@pytest.mark.parametrize(("button", "status"), [("Complete", "captured"), ("Fail", "failed")])
async def test_the_customer_authenticates_in_a_real_browser(
    live: tuple[Api, Container], browser: Any, shop_page: str, button: str, status: str
) -> None:
    api, container = live
    payment = await requires_action(api, return_url=shop_page)
    url = payment["next_action"]["redirect_to_url"]["url"]

    final, heading = await _authenticate_in_browser(browser, url, button)

    redirect_status = "succeeded" if status == "captured" else "failed"
    assert final.startswith(shop_page)
    assert parse_qs(urlsplit(final).query) == {
        "payment_id": [payment["id"]],
        "redirect_status": [redirect_status],
    }
    assert heading == f"Back at the shop: {redirect_status}"
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == status
    assert settled["next_action"] is None
    if status == "failed":
        assert settled["failure"]["code"] == "payment_intent_authentication_failure"
    else:
        assert settled["amount_captured"] == 1999
    (charge,) = await charges(container, payment["id"])
    assert charge.status == ("captured" if status == "captured" else "failed")
