"""The refund state machine: one table, one function that checks a transition."""

from __future__ import annotations

import enum

from paysvc.errors import StateConflict


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # recorded; the gateway's answer is not known yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundReason(enum.StrEnum):
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"


R = RefundStatus
TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    R.PENDING: frozenset({R.SUCCEEDED, R.FAILED}),
    R.SUCCEEDED: frozenset({R.FAILED}),  # the gateway reversed it (Stripe does)
    R.FAILED: frozenset(),
}
# These count against what is still refundable on the payment.
OUTSTANDING = frozenset({R.PENDING, R.SUCCEEDED})


def check_transition(current: str, target: RefundStatus) -> None:
    if target not in TRANSITIONS[RefundStatus(current)]:
        raise StateConflict(f"Cannot move a refund from {current} to {target}", param="status")
