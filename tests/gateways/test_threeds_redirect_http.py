"""3-D Secure with a redirect, through the whole stack: our API -> the real Stripe SDK -> a fake
Stripe over HTTP that answers like Stripe does with a `return_url` (`next_action.type =
redirect_to_url`, a hooks.stripe.com URL), which localstripe cannot. The customer then
authenticates at "Stripe" and the owner's empty re-confirm settles the payment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from paysvc.bootstrap import build_container
from paysvc.web.app import create_app
from tests.conftest import CUSTOMER, Api, make_settings
from tests.gateways.conftest import TEST_KEY, FakeStripe, intent_json

PI = "/v1/payment_intents"
HOOKS = "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_fake123"
RETURN_URL = "https://shop.example.com/checkout/done"


@pytest.fixture
async def api(
    fake_stripe: FakeStripe, database_url: str, aiohttp_client: Any
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        PAYMENT_GATEWAY="stripe",
        STRIPE_SECRET_KEY=TEST_KEY,
        STRIPE_API_BASE=fake_stripe.url,
    )
    container = build_container(settings)
    client = await aiohttp_client(create_app(container, own_container=False))
    yield Api(client)
    await client.close()
    await container.close()


def waiting(payment_id: str) -> dict[str, Any]:
    return intent_json(
        status="requires_action",
        amount_received=0,
        metadata={"paysvc_payment_id": payment_id},
        next_action={
            "type": "redirect_to_url",
            "redirect_to_url": {"url": HOOKS, "return_url": RETURN_URL},
        },
    )


async def test_redirect_then_reconfirm_captures(api: Api, fake_stripe: FakeStripe) -> None:
    payment = await api.create()
    fake_stripe.reply("POST", PI, waiting(payment["id"]))

    confirmed = await api.post(
        f"/payments/{payment['id']}/confirm",
        {"payment_method": "pm_card_threeDSecure2Required", "return_url": RETURN_URL},
    )

    assert confirmed["status"] == "requires_action"
    assert confirmed["gateway_reference"] == "pi_fake123"
    assert confirmed["next_action"] == {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": HOOKS, "return_url": RETURN_URL},
    }
    (call,) = fake_stripe.calls("POST", PI)
    assert call.form["return_url"] == RETURN_URL
    assert call.form["confirm"] == "true"

    # The customer authenticates at Stripe; the owner's empty re-confirm asks and settles.
    fake_stripe.reply("GET", f"{PI}/pi_fake123", intent_json(status="succeeded"))
    response = await api.client.post(f"/payments/{payment['id']}/confirm", headers=CUSTOMER)
    settled = await response.json()
    assert response.status == 200, settled
    assert settled["status"] == "captured" and settled["next_action"] is None
    assert len(fake_stripe.calls("POST", PI)) == 1  # never charged again


async def test_cancel_while_waiting_cancels_the_intent(api: Api, fake_stripe: FakeStripe) -> None:
    payment = await api.create()
    fake_stripe.reply("POST", PI, waiting(payment["id"]))
    await api.post(
        f"/payments/{payment['id']}/confirm",
        {"payment_method": "pm_card_threeDSecure2Required", "return_url": RETURN_URL},
    )
    fake_stripe.reply("POST", f"{PI}/pi_fake123/cancel", intent_json(status="canceled"))

    cancelled = await api.post(f"/payments/{payment['id']}/cancel", {"reason": "abandoned"})

    assert cancelled["status"] == "cancelled"
    assert len(fake_stripe.calls("POST", f"{PI}/pi_fake123/cancel")) == 1
