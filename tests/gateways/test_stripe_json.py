"""One reader of Stripe's PaymentIntents and Refunds, for the adapter's answers and for
webhook objects alike (they used to disagree on a missing `amount_received`)."""

from __future__ import annotations

from paysvc.gateways.base import GatewayPaymentStatus, GatewayRefundStatus, NextAction
from paysvc.gateways.stripe_json import payment_of, refund_of
from paysvc.webhooks.stripe_objects import payment_from_intent, refund_from_object
from tests.gateways.conftest import intent_json


def test_an_intent_without_amount_received_reads_the_same_both_ways() -> None:
    intent = intent_json(status="succeeded", amount=1999)
    del intent["amount_received"], intent["amount_capturable"]
    from_webhook = payment_from_intent(intent)
    assert from_webhook == payment_of(intent)
    assert from_webhook is not None
    assert (from_webhook.status, from_webhook.amount_captured) == (
        GatewayPaymentStatus.CAPTURED,
        1999,
    )
    assert from_webhook.card is not None and from_webhook.card.last4 == "4444"


def test_statuses_a_webhook_does_not_act_on() -> None:
    for status in ("requires_confirmation", "requires_payment_method"):
        assert payment_from_intent(intent_json(status=status)) is None


def test_requires_action_reads_the_same_both_ways_with_its_next_action() -> None:
    url = "https://hooks.stripe.com/3d_secure_2/hosted?payment_intent=pi_fake123"
    intent = intent_json(
        status="requires_action",
        amount_received=0,
        next_action={
            "type": "redirect_to_url",
            "redirect_to_url": {"url": url, "return_url": "https://shop.example/done"},
        },
    )
    read = payment_from_intent(intent)
    assert read == payment_of(intent)
    assert read is not None and read.status is GatewayPaymentStatus.REQUIRES_ACTION
    assert read.next_action == NextAction(
        "redirect_to_url", url=url, return_url="https://shop.example/done"
    )


def test_a_refund_reads_the_same_both_ways() -> None:
    refund = {
        "id": "re_1",
        "object": "refund",
        "amount": 500,
        "payment_intent": "pi_1",
        "status": "failed",
        "failure_reason": "expired_or_canceled_card",
        "metadata": {"paysvc_refund_id": "re_ours"},
    }
    read = refund_from_object(refund)
    assert read == refund_of(refund)
    assert (read.status, read.refund_id) == (GatewayRefundStatus.FAILED, "re_ours")
