"""Stripe event objects (plain JSON dicts) mapped into our own DTOs. Pure: no I/O, no `stripe`.

Only the Stripe adapter imports the SDK; webhooks arrive as JSON and are read here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paysvc.gateways.base import (
    PAYMENT_ID_KEY,
    REFUND_ID_KEY,
    CardDetails,
    Decline,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    NextAction,
)

_PI_STATUS = {
    "succeeded": GatewayPaymentStatus.CAPTURED,
    "requires_capture": GatewayPaymentStatus.AUTHORIZED,
    "canceled": GatewayPaymentStatus.CANCELED,
    "processing": GatewayPaymentStatus.PROCESSING,
    "requires_action": GatewayPaymentStatus.REQUIRES_ACTION,
}
_REFUND_STATUS = {
    "pending": GatewayRefundStatus.PENDING,
    "requires_action": GatewayRefundStatus.PENDING,
    "succeeded": GatewayRefundStatus.SUCCEEDED,
    "failed": GatewayRefundStatus.FAILED,
    "canceled": GatewayRefundStatus.FAILED,
}


class UnusableObject(ValueError):
    """The event's object lacks what we need to act on it."""


@dataclass(frozen=True, slots=True)
class PaymentLink:
    """How an event object points at one of our payments."""

    reference: str | None  # the PaymentIntent id (our gateway_reference)
    payment_id: str | None  # metadata.paysvc_payment_id, when present


@dataclass(frozen=True, slots=True)
class GatewayDispute:
    reference: str  # Stripe dp_… / du_…
    payment_reference: str
    amount: int
    currency: str
    reason: str
    status: str
    evidence_due_by: dt.datetime | None


def link_of(obj: dict[str, Any]) -> PaymentLink:
    """The payment an event object concerns: a PaymentIntent itself, or the `payment_intent`
    field of a charge, refund or dispute."""
    if obj.get("object") == "payment_intent":
        reference = _str(obj.get("id"))
    else:
        reference = _str(obj.get("payment_intent"))
    metadata = obj.get("metadata")
    payment_id = _str(metadata.get(PAYMENT_ID_KEY)) if isinstance(metadata, dict) else None
    return PaymentLink(reference=reference, payment_id=payment_id)


def next_action_of(intent: Mapping[str, Any]) -> NextAction | None:
    """A PaymentIntent's `next_action`: `redirect_to_url` with its URLs; `use_stripe_sdk`
    (Stripe.js completes it on the client) and other types by their type only."""
    action = intent.get("next_action")
    kind = action.get("type") if isinstance(action, Mapping) else None
    if not isinstance(action, Mapping) or not isinstance(kind, str) or not kind:
        return None
    redirect = action.get("redirect_to_url")
    if kind == "redirect_to_url" and isinstance(redirect, Mapping):
        return NextAction(
            kind, url=_str(redirect.get("url")), return_url=_str(redirect.get("return_url"))
        )
    return NextAction(kind)


def payment_from_intent(intent: dict[str, Any]) -> GatewayPayment | None:
    """A PaymentIntent as a GatewayPayment; None while it is in a status we do not track
    (requires_payment_method before any attempt, requires_confirmation)."""
    reference = _str(intent.get("id"))
    if reference is None:
        raise UnusableObject("payment intent without id")
    status_text = intent.get("status")
    error = intent.get("last_payment_error")
    decline = None
    if isinstance(error, dict):
        decline = Decline(
            code=_str(error.get("code")) or "card_declined",
            decline_code=_str(error.get("decline_code")),
            message=_str(error.get("message")) or "The payment failed.",
        )
    status = _PI_STATUS.get(str(status_text))
    if status is None and status_text == "requires_payment_method" and decline is not None:
        status = GatewayPaymentStatus.FAILED
    if status is None:
        return None
    amount = _int(intent.get("amount"))
    # Stripe-compatible servers may omit these (localstripe): derive them from the status.
    capturable = intent.get("amount_capturable")
    received = intent.get("amount_received")
    return GatewayPayment(
        reference=reference,
        status=status,
        amount=amount,
        amount_capturable=(
            _int(capturable)
            if capturable is not None
            else amount
            if status == GatewayPaymentStatus.AUTHORIZED
            else 0
        ),
        amount_captured=(
            _int(received)
            if received is not None
            else amount
            if status == GatewayPaymentStatus.CAPTURED
            else 0
        ),
        currency=str(intent.get("currency") or "").lower(),
        card=_card(intent),
        decline=decline if status == GatewayPaymentStatus.FAILED else None,
        next_action=next_action_of(intent),
    )


def refund_from_object(refund: dict[str, Any]) -> GatewayRefund:
    reference = _str(refund.get("id"))
    payment_reference = _str(refund.get("payment_intent"))
    status = _REFUND_STATUS.get(str(refund.get("status")))
    amount = _int(refund.get("amount"))
    if reference is None or payment_reference is None or status is None or amount <= 0:
        raise UnusableObject("refund without id, payment_intent, amount or a known status")
    metadata = refund.get("metadata")
    return GatewayRefund(
        reference=reference,
        payment_reference=payment_reference,
        amount=amount,
        status=status,
        failure_reason=_str(refund.get("failure_reason")),
        refund_id=_str(metadata.get(REFUND_ID_KEY)) if isinstance(metadata, dict) else None,
        reason=_str(refund.get("reason")),
    )


def refunds_of_charge(charge: dict[str, Any]) -> list[GatewayRefund]:
    """The refunds listed on a charge (`charge.refunded`); Stripe may omit the list."""
    listing = charge.get("refunds")
    items = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(items, list):
        return []
    payment_reference = _str(charge.get("payment_intent"))
    refunds = []
    for item in items:
        if isinstance(item, dict):
            if payment_reference and not item.get("payment_intent"):
                item = {**item, "payment_intent": payment_reference}
            refunds.append(refund_from_object(item))
    return refunds


def dispute_from_object(dispute: dict[str, Any]) -> GatewayDispute:
    reference = _str(dispute.get("id"))
    payment_reference = _str(dispute.get("payment_intent"))
    if reference is None or payment_reference is None:
        raise UnusableObject("dispute without id or payment_intent")
    evidence = dispute.get("evidence_details")
    due = evidence.get("due_by") if isinstance(evidence, dict) else None
    return GatewayDispute(
        reference=reference,
        payment_reference=payment_reference,
        amount=_int(dispute.get("amount")),
        currency=str(dispute.get("currency") or "").lower(),
        reason=_str(dispute.get("reason")) or "general",
        status=_str(dispute.get("status")) or "needs_response",
        evidence_due_by=(
            dt.datetime.fromtimestamp(due, dt.UTC)
            if isinstance(due, int) and not isinstance(due, bool)
            else None
        ),
    )


def _card(intent: dict[str, Any]) -> CardDetails | None:
    """Card details when the charge is embedded (`charges.data[0]` or an expanded
    `latest_charge`); webhooks usually carry only ids, and then we keep what we have."""
    charge: Any = intent.get("latest_charge")
    if not isinstance(charge, dict):
        charges = intent.get("charges")
        data = charges.get("data") if isinstance(charges, dict) else None
        charge = data[0] if isinstance(data, list) and data else None
    if not isinstance(charge, dict):
        return None
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, dict) else None
    if not isinstance(card, dict) or not card.get("last4"):
        return None
    return CardDetails(
        brand=str(card.get("brand") or "unknown"),
        last4=str(card["last4"]),
        exp_month=_int(card.get("exp_month")),
        exp_year=_int(card.get("exp_year")),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
