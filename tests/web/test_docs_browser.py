"""Swagger UI in a real (headless) browser: Authorize, then "Try it out" creates a payment."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from playwright.async_api import Page

from tests.browser import browser, page  # noqa: F401
from tests.conftest import token


async def test_try_it_out_creates_a_payment_after_authorize(
    client: TestClient[Any, Any],
    page: Page,  # noqa: F811
) -> None:
    outside: list[str] = []
    origin = str(client.make_url("/"))
    page.on("request", lambda r: None if r.url.startswith(origin) else outside.append(r.url))
    await page.goto(str(client.make_url("/docs")))

    await page.click("button.authorize")
    await page.fill(".auth-container input", token("17"))
    await page.click(".auth-container button[type=submit]")
    await page.click("button.btn-done")

    operation = page.locator("#operations-payments-post_payments_intents")
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    body = operation.locator("textarea.body-param__text")
    await body.fill('{"order_id": "browser-1", "amount": 1999, "currency": "usd"}')
    await operation.locator("button.execute").click()

    status = operation.locator(".live-responses-table .response .response-col_status").first
    await status.wait_for()
    assert (await status.inner_text()).strip() == "201"
    shown = await operation.locator(".live-responses-table .microlight").first.inner_text()
    assert '"status": "pending"' in shown and '"order_id": "browser-1"' in shown
    assert outside == []  # every asset came from the service itself

    listed = await client.get(
        "/payments?order_id=browser-1", headers={"Authorization": f"Bearer {token('17')}"}
    )
    assert [p["amount"] for p in (await listed.json())["data"]] == [1999]
