"""Stripe event objects (plain JSON dicts) mapped into our own DTOs. Pure: no I/O, no `stripe`.

Only the Stripe adapter imports the SDK; webhooks arrive as JSON. PaymentIntents and Refunds
are read by `paysvc.gateways.stripe_json`, the one reader the adapter uses too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from paysvc.gateways.base import PAYMENT_ID_KEY, GatewayPayment, GatewayRefund
from paysvc.gateways.stripe_json import REFUND_STATUS, STATUS, payment_of, refund_of

# Statuses we do not act on from a webhook (we confirm at creation).
_UNTRACKED = frozenset({"requires_confirmation"})


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


def payment_from_intent(intent: dict[str, Any]) -> GatewayPayment | None:
    """A PaymentIntent as a GatewayPayment, read by the one Stripe reader the adapter uses
    too; None while it is in a status we do not track (requires_payment_method before any
    attempt, requires_confirmation)."""
    if _str(intent.get("id")) is None:
        raise UnusableObject("payment intent without id")
    status = intent.get("status")
    attempted = isinstance(intent.get("last_payment_error"), dict)
    if status not in STATUS or status in _UNTRACKED:
        return None
    if status == "requires_payment_method" and not attempted:
        return None
    return payment_of(intent)


def refund_from_object(refund: dict[str, Any]) -> GatewayRefund:
    """A Refund object (the same reader as the adapter's), refused when unusable."""
    usable = (
        _str(refund.get("id")) is not None
        and _str(refund.get("payment_intent")) is not None
        and refund.get("status") in REFUND_STATUS
        and _int(refund.get("amount")) > 0
    )
    if not usable:
        raise UnusableObject("refund without id, payment_intent, amount or a known status")
    return refund_of(refund)


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


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
