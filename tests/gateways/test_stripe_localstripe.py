"""StripeGateway over real HTTP, with the real SDK, against a localstripe process.

What localstripe lacks, and where it is covered instead (test_stripe_fake_server.py):
- idempotency keys: accepted and ignored, so a replay cannot be observed here;
- PaymentIntent search (GET /v1/payment_intents/search answers 404): find_payment falls back
  to listing recent PaymentIntents, which is what runs here;
- `amount_capturable`/`amount_received` on PaymentIntents: the adapter derives them from the
  status here, so a partial capture is checked through the Charge localstripe keeps;
- `decline_code` and the PaymentIntent inside a card error (it sends only the charge id): the
  adapter finds the PaymentIntent by our payment id instead;
- `automatic_payment_methods` and refund `reason` (rejected as "Unexpected"): the adapter drops
  them after the first refusal, so both paths run here;
- test payment methods: only pm_card_visa, pm_card_visa_chargeDeclined (which, oddly, only
  declines on attach) and pm_card_chargeCustomerFail (declines on charge).
"""

from __future__ import annotations

import pytest
import stripe

from paysvc.gateways.base import (
    CardDeclined,
    CardDetails,
    GatewayPaymentStatus,
    GatewayRefundStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    RefundRequest,
)
from paysvc.gateways.stripe import StripeGateway
from tests.gateways.conftest import TEST_KEY, charge_request

VISA = CardDetails(brand="visa", last4="4242", exp_month=12, exp_year=2030)


async def raw_intent(url: str, reference: str) -> stripe.PaymentIntent:
    """Stripe's own view of a PaymentIntent, read with the plain SDK."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(TEST_KEY, http_client=http, base_addresses={"api": url})
    try:
        return await client.v1.payment_intents.retrieve_async(
            reference, {"expand": ["latest_charge"]}
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


async def test_automatic_charge_is_captured_with_card_details(
    stripe_gateway: StripeGateway, localstripe_url: str
) -> None:
    request = charge_request(currency="USD", metadata={"cart": "42"})

    payment = await stripe_gateway.charge(request)

    assert payment.status is GatewayPaymentStatus.CAPTURED
    assert payment.reference.startswith("pi_")
    assert (payment.amount, payment.amount_captured, payment.amount_capturable) == (1999, 1999, 0)
    assert payment.currency == "usd"
    assert payment.card == VISA
    assert payment.gateway == "stripe"
    intent = await raw_intent(localstripe_url, payment.reference)
    assert intent.metadata.to_dict() == {
        "cart": "42",
        "paysvc_payment_id": request.payment_id,
        "order_id": request.order_id,
    }
    assert await stripe_gateway.retrieve_payment(payment.reference) == payment


async def test_manual_charge_authorizes_then_partial_capture(
    stripe_gateway: StripeGateway, localstripe_url: str
) -> None:
    authorized = await stripe_gateway.charge(charge_request(amount=1000, capture_method="manual"))
    assert authorized.status is GatewayPaymentStatus.AUTHORIZED
    assert (authorized.amount_capturable, authorized.amount_captured) == (1000, 0)

    captured = await stripe_gateway.capture(authorized.reference, 600, "cap-key-1")

    assert captured.status is GatewayPaymentStatus.CAPTURED
    assert captured.amount_capturable == 0
    # localstripe has no amount_received; it releases the uncaptured rest as a refund.
    charge = (await raw_intent(localstripe_url, authorized.reference)).latest_charge
    assert isinstance(charge, stripe.Charge)
    assert (charge.captured, charge.amount_refunded) == (True, 400)


async def test_cancel_voids_an_authorization(stripe_gateway: StripeGateway) -> None:
    authorized = await stripe_gateway.charge(charge_request(capture_method="manual"))

    canceled = await stripe_gateway.cancel(authorized.reference, "cancel-key-1")

    assert canceled.status is GatewayPaymentStatus.CANCELED
    assert canceled.reference == authorized.reference
    assert canceled.amount_capturable == 0
    assert (await stripe_gateway.retrieve_payment(authorized.reference)).status == "canceled"


async def test_capturing_a_captured_payment_is_rejected(stripe_gateway: StripeGateway) -> None:
    payment = await stripe_gateway.charge(charge_request())

    with pytest.raises(GatewayRejected):
        await stripe_gateway.capture(payment.reference, payment.amount, "cap-twice")


async def test_decline_raises_card_declined_with_the_failed_payment(
    stripe_gateway: StripeGateway,
) -> None:
    request = charge_request(payment_method="pm_card_chargeCustomerFail")

    with pytest.raises(CardDeclined) as caught:
        await stripe_gateway.charge(request)

    decline = caught.value.decline
    assert decline.code == "card_declined"
    assert decline.decline_code is None  # localstripe sends none (see the fake-server test)
    assert decline.message == "Your card was declined."
    payment = caught.value.payment
    assert payment is not None
    assert payment.status is GatewayPaymentStatus.FAILED
    assert payment.reference.startswith("pi_")
    assert (payment.amount_captured, payment.amount_capturable) == (0, 0)
    assert payment.decline == decline
    found = await stripe_gateway.find_payment(request.payment_id)
    assert found is not None and found.reference == payment.reference
    assert found.status is GatewayPaymentStatus.FAILED


async def test_unknown_payment_method_is_invalid(stripe_gateway: StripeGateway) -> None:
    with pytest.raises(InvalidPaymentMethod):
        await stripe_gateway.charge(charge_request(payment_method="pm_card_doesNotExist"))


async def test_refunds_partial_then_the_rest(stripe_gateway: StripeGateway) -> None:
    payment = await stripe_gateway.charge(charge_request(amount=1000))

    first = await stripe_gateway.refund(
        RefundRequest(
            refund_id="re_paysvc_first",
            payment_reference=payment.reference,
            amount=300,
            currency="usd",
            reason="requested_by_customer",  # localstripe refuses it; the adapter resends without
            idempotency_key="refund-key-1",
        )
    )
    rest = await stripe_gateway.refund(
        RefundRequest(
            refund_id="re_paysvc_rest",
            payment_reference=payment.reference,
            amount=700,
            currency="usd",
            reason=None,
            idempotency_key="refund-key-2",
        )
    )

    assert (first.status, first.amount, first.payment_reference) == (
        GatewayRefundStatus.SUCCEEDED,
        300,
        payment.reference,
    )
    assert (rest.status, rest.amount) == (GatewayRefundStatus.SUCCEEDED, 700)
    assert first.reference.startswith("re_") and first.reference != rest.reference
    assert await stripe_gateway.retrieve_refund(first.reference) == first
    assert await stripe_gateway.find_refund("re_paysvc_rest") == rest
    assert await stripe_gateway.find_refund("re_paysvc_never") is None


async def test_full_refund_by_default_amount(stripe_gateway: StripeGateway) -> None:
    payment = await stripe_gateway.charge(charge_request(amount=2500))

    refund = await stripe_gateway.refund(
        RefundRequest("re_paysvc_full", payment.reference, 2500, "usd", None, "refund-full")
    )

    assert (refund.status, refund.amount) == (GatewayRefundStatus.SUCCEEDED, 2500)


async def test_find_payment(stripe_gateway: StripeGateway) -> None:
    request = charge_request()
    payment = await stripe_gateway.charge(request)

    assert await stripe_gateway.find_payment(request.payment_id) == payment
    assert await stripe_gateway.find_payment("pay_unknown") is None
    with pytest.raises(GatewayRejected):
        await stripe_gateway.find_payment("pay_x' OR status:'succeeded")


async def test_retrieve_unknown_payment_is_rejected(stripe_gateway: StripeGateway) -> None:
    with pytest.raises(GatewayRejected):
        await stripe_gateway.retrieve_payment("pi_doesnotexist")


async def test_health_ok(stripe_gateway: StripeGateway) -> None:
    await stripe_gateway.check_health()


async def test_bad_key_is_unavailable(localstripe_url: str) -> None:
    gateway = StripeGateway("not_a_stripe_key", api_base=localstripe_url)
    try:
        with pytest.raises(GatewayUnavailable) as caught:
            await gateway.charge(charge_request())
        assert "not_a_stripe_key" not in str(caught.value)
        with pytest.raises(GatewayUnavailable):
            await gateway.check_health()
    finally:
        await gateway.close()
