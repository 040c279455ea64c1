"""Stripe's JSON (PaymentIntents, Refunds), read into our own types: the ONE reader shared by
the Stripe adapter (API answers) and the webhook code (event objects). Pure: no I/O, no
`stripe` import, `Any` kept inside these readers.

Reading the JSON rather than the SDK's typed attributes keeps it working against
Stripe-compatible servers that omit fields (localstripe has no `amount_capturable` /
`amount_received`: they are derived from the status).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from paysvc.gateways.base import (
    REFUND_ID_KEY,
    CardDetails,
    Decline,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    NextAction,
)

Json = Mapping[str, Any]
NAME = "stripe"
_SECRETS = re.compile(r"\b(?:sk|rk|pk|whsec)_\w+|\d{12,19}")

STATUS = {
    "requires_capture": GatewayPaymentStatus.AUTHORIZED,
    "succeeded": GatewayPaymentStatus.CAPTURED,
    "canceled": GatewayPaymentStatus.CANCELED,
    "processing": GatewayPaymentStatus.PROCESSING,
    # We confirm at creation, so these mean the attempt failed (declined, or authentication
    # failed: requires_payment_method with last_payment_error).
    "requires_payment_method": GatewayPaymentStatus.FAILED,
    "requires_confirmation": GatewayPaymentStatus.FAILED,
    # The customer must authenticate (3-D Secure): `next_action` says how.
    "requires_action": GatewayPaymentStatus.REQUIRES_ACTION,
}
REFUND_STATUS = {
    "pending": GatewayRefundStatus.PENDING,
    "requires_action": GatewayRefundStatus.PENDING,
    "succeeded": GatewayRefundStatus.SUCCEEDED,
    "failed": GatewayRefundStatus.FAILED,
    "canceled": GatewayRefundStatus.FAILED,
}


def safe(message: str | None) -> str:
    """A message from Stripe, with anything that looks like a key or a card number removed."""
    return _SECRETS.sub("[redacted]", message or "")[:500]


def payment_of(data: Json, decline: Decline | None = None) -> GatewayPayment:
    status = STATUS.get(text(data, "status"), GatewayPaymentStatus.PROCESSING)
    amount = number(data, "amount")
    capturable = opt_number(data, "amount_capturable")
    received = opt_number(data, "amount_received")
    failed = status is GatewayPaymentStatus.FAILED
    return GatewayPayment(
        reference=text(data, "id"),
        status=status,
        amount=amount,
        amount_capturable=(
            capturable
            if capturable is not None
            else amount
            if status is GatewayPaymentStatus.AUTHORIZED
            else 0
        ),
        amount_captured=(
            received
            if received is not None
            else amount
            if status is GatewayPaymentStatus.CAPTURED
            else 0
        ),
        currency=text(data, "currency").lower(),
        card=_card(data),
        decline=(decline or _last_decline(data)) if failed else None,
        gateway=NAME,
        next_action=(
            next_action_of(data) if status is GatewayPaymentStatus.REQUIRES_ACTION else None
        ),
    )


def next_action_of(data: Json) -> NextAction | None:
    """A PaymentIntent's `next_action`: `redirect_to_url` with its URLs; `use_stripe_sdk`
    (Stripe.js completes it on the client) and other types by their type only."""
    action = obj(data, "next_action")
    kind = opt_text(action, "type")
    if not kind:
        return None
    if kind == "redirect_to_url":
        redirect = obj(action, "redirect_to_url")
        return NextAction(
            kind, url=opt_text(redirect, "url"), return_url=opt_text(redirect, "return_url")
        )
    return NextAction(kind)


def refund_of(data: Json) -> GatewayRefund:
    return GatewayRefund(
        reference=text(data, "id"),
        payment_reference=text(data, "payment_intent"),
        amount=number(data, "amount"),
        status=REFUND_STATUS.get(text(data, "status"), GatewayRefundStatus.PENDING),
        failure_reason=opt_text(data, "failure_reason"),
        refund_id=opt_text(obj(data, "metadata"), REFUND_ID_KEY),
        reason=opt_text(data, "reason"),
    )


def _card(data: Json) -> CardDetails | None:
    """From the expanded PaymentMethod, the failed attempt's one, or the latest Charge."""
    for source in (
        obj(data, "payment_method"),
        obj(obj(data, "last_payment_error"), "payment_method"),
        obj(obj(data, "latest_charge"), "payment_method_details"),
        obj(_first_charge(data), "payment_method_details"),
    ):
        card = obj(source, "card")
        if card.get("last4"):
            return CardDetails(
                brand=text(card, "brand"),
                last4=text(card, "last4"),
                exp_month=number(card, "exp_month"),
                exp_year=number(card, "exp_year"),
            )
    return None


def _first_charge(data: Json) -> Json:
    """`charges.data[0]` (API versions before 2022-11-15 embed the charges)."""
    charges = obj(data, "charges").get("data")
    return (
        charges[0]
        if isinstance(charges, list) and charges and isinstance(charges[0], Mapping)
        else {}
    )


def _last_decline(data: Json) -> Decline:
    """Why the last attempt failed: a decline, or `payment_intent_authentication_failure`."""
    error = obj(data, "last_payment_error")
    if not error:
        return generic_failure()
    return Decline(
        code=opt_text(error, "code") or "card_declined",
        decline_code=opt_text(error, "decline_code"),
        message=safe(opt_text(error, "message") or "Your card was declined."),
    )


def generic_failure() -> Decline:
    return Decline("card_declined", None, "The payment was not completed.")


def obj(data: object, key: str) -> Json:
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def text(data: Json, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def opt_text(data: Json, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def number(data: Json, key: str) -> int:
    return opt_number(data, key) or 0


def opt_number(data: Json, key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
