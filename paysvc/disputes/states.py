"""Dispute statuses as Stripe reports them, and the order they may only move forward in."""

from __future__ import annotations

# Inquiries (warning_*) and chargebacks awaiting evidence or a decision.
OPEN = frozenset(
    {"warning_needs_response", "needs_response", "warning_under_review", "under_review"}
)
CLOSED = frozenset({"won", "lost", "warning_closed", "prevented"})
# While one of its disputes is in one of these, the payment shows `"disputed": true`.
# `won` clears it: the bank reversed the chargeback and the money is ours again.
MARKS_PAYMENT = OPEN | {"lost"}

_RANK = {
    "warning_needs_response": 0,
    "needs_response": 0,
    "warning_under_review": 1,
    "under_review": 1,
}


def rank(status: str) -> int:
    """0 awaiting response, 1 under review, 2 closed; unknown statuses count as open."""
    return 2 if status in CLOSED else _RANK.get(status, 0)


def may_move(current: str, reported: str) -> bool:
    """A report may update a dispute unless it is older news (a lower rank)."""
    return rank(reported) >= rank(current) and not (current in CLOSED and reported != current)
