"""The operation state machine: one table, one function that checks a transition."""

from __future__ import annotations

import enum

from paysvc.errors import StateConflict


class OperationKind(enum.StrEnum):
    AUTHORIZE = "authorize"  # confirm of a manual-capture payment
    CHARGE = "charge"  # confirm of an automatic-capture payment
    CAPTURE = "capture"
    VOID = "void"  # cancel of an authorization
    REFUND = "refund"


class OperationStatus(enum.StrEnum):
    PENDING = "pending"  # recorded; the gateway's answer is not known yet
    REQUIRES_ACTION = "requires_action"  # the customer must act (3-D Secure) before it settles
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # definitively: the gateway did not move money
    UNKNOWN = "unknown"  # no answer inside the gateway's idempotency window: for a human


K = OperationKind
OS = OperationStatus
CONFIRMS = frozenset({K.AUTHORIZE, K.CHARGE})
TRANSITIONS: dict[OperationStatus, frozenset[OperationStatus]] = {
    OS.PENDING: frozenset({OS.REQUIRES_ACTION, OS.SUCCEEDED, OS.FAILED, OS.UNKNOWN}),
    OS.REQUIRES_ACTION: frozenset({OS.PENDING, OS.SUCCEEDED, OS.FAILED, OS.UNKNOWN}),
    # A definitive answer is applied whenever it arrives, even after we gave up asking.
    OS.UNKNOWN: frozenset({OS.SUCCEEDED, OS.FAILED}),
    # A refund the gateway reverses (Stripe: succeeded -> failed) is recorded as such.
    OS.SUCCEEDED: frozenset({OS.FAILED}),
    OS.FAILED: frozenset(),
}
# Not settled: the completer (or a human, for unknown) still has to find out.
OPEN = frozenset({OS.PENDING, OS.REQUIRES_ACTION, OS.UNKNOWN})


def may_move(kind: str, current: str, target: OperationStatus) -> bool:
    if current == OS.SUCCEEDED and kind != K.REFUND:
        return False
    return target in TRANSITIONS[OperationStatus(current)]


def check_transition(kind: str, current: str, target: OperationStatus) -> None:
    if not may_move(kind, current, target):
        raise StateConflict(f"Cannot move a {kind} operation from {current} to {target}")
