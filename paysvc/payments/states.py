"""The payment state machine: one table, one function that applies a transition."""

from __future__ import annotations

import enum

from paysvc.errors import StateConflict


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"  # the customer must authenticate (3-D Secure)
    PROCESSING = "processing"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = PaymentStatus
TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.PENDING: frozenset(
        {S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.PROCESSING, S.FAILED, S.CANCELLED}
    ),
    S.REQUIRES_ACTION: frozenset({S.AUTHORIZED, S.CAPTURED, S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.AUTHORIZED, S.CAPTURED, S.FAILED}),
    S.AUTHORIZED: frozenset({S.CAPTURED, S.CANCELLED}),
    S.CAPTURED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    # ... -> captured/partially_refunded: a refund the gateway reversed.
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.CAPTURED}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.CAPTURED}),
}

# A payment in one of these holds its order: no other payment of the order may be confirmed.
LIVE = frozenset({S.REQUIRES_ACTION, S.PROCESSING, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED})
# Money has been taken: refunds are possible.
REFUNDABLE = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED})
FINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets) | {S.REFUNDED}


def check_transition(current: str, target: PaymentStatus) -> None:
    if target not in TRANSITIONS[PaymentStatus(current)]:
        raise StateConflict(f"Cannot move a payment from {current} to {target}", param="status")
