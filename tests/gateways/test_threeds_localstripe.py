"""3-D Secure through the whole stack against localstripe: our API -> the real Stripe SDK ->
localstripe over HTTP, its `_authenticate` endpoint standing in for the customer, and its own
signed webhooks coming back to `POST /webhooks/stripe`.

localstripe always answers a 3-D Secure card with `next_action.type = use_stripe_sdk` (it has no
hosted redirect page and refuses `return_url`); the `redirect_to_url` mapping is covered against
a fake Stripe in test_stripe_fake_server.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import stripe

from paysvc.bootstrap import build_container
from paysvc.web.app import create_app
from paysvc.webhooks.models import WebhookEvent
from tests.conftest import CUSTOMER, Api, make_settings
from tests.gateways.conftest import TEST_KEY
from tests.support import rows

THREE_DS_CARD = "4000002760003184"  # localstripe: authentication required
WEBHOOK_SECRET = "whsec_localstripe_" + "c" * 24
SETTLE_DEADLINE = 60.0


async def _localstripe(base: str, method: str, path: str, **json: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            base + path,
            json=json or None,
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json(content_type=None) or {}
        return body


async def _three_ds_method(url: str) -> str:
    """A PaymentMethod for localstripe's 3-D Secure card (made at "Stripe", as Stripe.js
    would: our API never sees a card number)."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(TEST_KEY, http_client=http, base_addresses={"api": url})
    try:
        method = await client.v1.payment_methods.create_async(
            {
                "type": "card",
                "card": {
                    "number": THREE_DS_CARD,
                    "exp_month": 12,
                    "exp_year": 2031,
                    "cvc": "123",
                },
            }
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    return method.id


async def _client_secret(url: str, reference: str) -> str:
    body = await _localstripe(url, "GET", f"/v1/payment_intents/{reference}")
    return str(body["client_secret"])


async def _authenticate(url: str, reference: str, success: bool) -> None:
    """The customer passes (or fails) the challenge at "Stripe"."""
    await _localstripe(
        url,
        "POST",
        f"/v1/payment_intents/{reference}/_authenticate",
        client_secret=await _client_secret(url, reference),
        success=success,
    )


@pytest.fixture
async def shop(
    localstripe_url: str, database_url: str, aiohttp_client: Any
) -> AsyncIterator[tuple[Api, Any]]:
    settings = make_settings(
        database_url,
        PAYMENT_GATEWAY="stripe",
        STRIPE_SECRET_KEY=TEST_KEY,
        STRIPE_API_BASE=localstripe_url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    container = build_container(settings)
    client = await aiohttp_client(create_app(container, own_container=False))
    hook = "paysvc-3ds-" + secrets.token_hex(4)
    await _localstripe(
        localstripe_url,
        "POST",
        f"/_config/webhooks/{hook}",
        url=str(client.make_url("/webhooks/stripe")),
        secret=WEBHOOK_SECRET,
    )
    try:
        yield Api(client), container
    finally:  # localstripe keeps webhooks for its whole life: send this one nothing more
        await _localstripe(
            localstripe_url,
            "POST",
            f"/_config/webhooks/{hook}",
            url="http://127.0.0.1:9/",
            secret=WEBHOOK_SECRET,
            events=[],
        )
        await client.close()
        await container.close()


async def _requires_action(api: Api, localstripe_url: str) -> dict[str, Any]:
    payment = await api.create(order_id="ls-" + secrets.token_hex(4))
    method = await _three_ds_method(localstripe_url)
    confirmed = await api.post(
        f"/payments/{payment['id']}/confirm",
        {"payment_method": method, "return_url": "https://shop.example.com/done"},
    )
    assert confirmed["status"] == "requires_action", confirmed
    assert confirmed["next_action"] == {"type": "use_stripe_sdk"}
    assert confirmed["gateway_reference"].startswith("pi_")
    return confirmed


async def _wait_for_status(api: Api, payment_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_DEADLINE
    while True:
        payment = await api.get(f"/payments/{payment_id}")
        if payment["status"] == status or time.monotonic() > deadline:
            return payment
        await asyncio.sleep(0.1)


async def test_the_webhook_settles_an_authenticated_payment(
    shop: tuple[Api, Any], localstripe_url: str
) -> None:
    api, container = shop
    payment = await _requires_action(api, localstripe_url)
    reference = payment["gateway_reference"]

    await _authenticate(localstripe_url, reference, success=True)

    settled = await _wait_for_status(api, payment["id"], "captured")
    assert settled["status"] == "captured"
    assert settled["amount_captured"] == 1999 and settled["next_action"] is None
    (event,) = await rows(
        container,
        WebhookEvent,
        WebhookEvent.payment_reference == reference,
        WebhookEvent.type == "payment_intent.succeeded",
    )
    assert event.status == "applied"
    # A re-confirm afterwards changes nothing and charges nothing.
    again = await api.client.post(f"/payments/{payment['id']}/confirm", headers=CUSTOMER)
    assert again.status == 409
    intents = await _localstripe(localstripe_url, "GET", "/v1/payment_intents?limit=100")
    mine = [i for i in intents["data"] if i["metadata"].get("paysvc_payment_id") == payment["id"]]
    assert [i["status"] for i in mine] == ["succeeded"]


async def test_reconfirm_settles_without_waiting_for_the_webhook(
    shop: tuple[Api, Any], localstripe_url: str
) -> None:
    api, _ = shop
    payment = await _requires_action(api, localstripe_url)
    await _authenticate(localstripe_url, payment["gateway_reference"], success=True)

    response = await api.client.post(f"/payments/{payment['id']}/confirm", headers=CUSTOMER)
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "captured"  # whichever came first, the re-confirm or the webhook


async def test_failed_authentication_answers_the_reconfirm_with_402(
    shop: tuple[Api, Any], localstripe_url: str
) -> None:
    api, _ = shop
    payment = await _requires_action(api, localstripe_url)
    await _authenticate(localstripe_url, payment["gateway_reference"], success=False)

    response = await api.client.post(f"/payments/{payment['id']}/confirm", headers=CUSTOMER)
    error = (await response.json())["error"]
    assert response.status == 402
    assert error["code"] == "payment_intent_authentication_failure"
    assert error["payment"]["status"] == "failed"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "failed"


async def test_cancel_while_waiting_cancels_the_intent(
    shop: tuple[Api, Any], localstripe_url: str
) -> None:
    api, _ = shop
    payment = await _requires_action(api, localstripe_url)

    cancelled = await api.post(f"/payments/{payment['id']}/cancel", {"reason": "abandoned"})

    assert cancelled["status"] == "cancelled"
    intent = await _localstripe(
        localstripe_url, "GET", f"/v1/payment_intents/{payment['gateway_reference']}"
    )
    assert intent["status"] == "canceled"
