"""The transition table: every (from, to) pair as a unit test, and through HTTP every operation
that must be refused with 409 `state_conflict` from each reachable status."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from paysvc.errors import StateConflict
from paysvc.payments.states import (
    FINAL,
    LIVE,
    REFUNDABLE,
    TRANSITIONS,
    PaymentStatus,
    check_transition,
)
from tests.conftest import ADMIN, SERVICE, Api

S = PaymentStatus
ALLOWED = {
    (S.PENDING, S.REQUIRES_ACTION),
    (S.REQUIRES_ACTION, S.AUTHORIZED),
    (S.REQUIRES_ACTION, S.CAPTURED),
    (S.REQUIRES_ACTION, S.PROCESSING),
    (S.REQUIRES_ACTION, S.FAILED),
    (S.REQUIRES_ACTION, S.CANCELLED),
    (S.PENDING, S.AUTHORIZED),
    (S.PENDING, S.CAPTURED),
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.CANCELLED),
    (S.PROCESSING, S.AUTHORIZED),
    (S.PROCESSING, S.CAPTURED),
    (S.PROCESSING, S.FAILED),
    (S.AUTHORIZED, S.CAPTURED),
    (S.AUTHORIZED, S.CANCELLED),
    (S.CAPTURED, S.PARTIALLY_REFUNDED),
    (S.CAPTURED, S.REFUNDED),
    (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
    (S.PARTIALLY_REFUNDED, S.REFUNDED),
    # The gateway reversed a refund: the money is back on the payment.
    (S.PARTIALLY_REFUNDED, S.CAPTURED),
    (S.REFUNDED, S.PARTIALLY_REFUNDED),
    (S.REFUNDED, S.CAPTURED),
}
PAIRS = list(itertools.product(PaymentStatus, PaymentStatus))


def test_table_is_exactly_the_contract() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert set(TRANSITIONS) == set(PaymentStatus)
    assert {S.FAILED, S.CANCELLED, S.REFUNDED} == FINAL
    assert {S.REQUIRES_ACTION, S.PROCESSING, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED} == LIVE
    assert {S.CAPTURED, S.PARTIALLY_REFUNDED} == REFUNDABLE


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_check_transition(current: PaymentStatus, target: PaymentStatus) -> None:
    if (current, target) in ALLOWED:
        check_transition(str(current), target)
    else:
        with pytest.raises(StateConflict) as caught:
            check_transition(str(current), target)
        assert caught.value.http_status == 409
        assert caught.value.type == "state_conflict"


async def _in_status(api: Api, status: str, order: str) -> dict[str, Any]:
    """A payment brought to `status` through the API only."""
    if status == "pending":
        return await api.create(order_id=order)
    if status == "processing":
        return await api.paid("pm_card_timeout", order_id=order)
    if status == "requires_action":
        payment = await api.create(order_id=order)
        return await api.post(
            f"/payments/{payment['id']}/confirm",
            {"payment_method": "pm_card_threeDSecure2Required"},
        )
    if status == "authorized":
        return await api.paid(capture_method="manual", order_id=order)
    if status == "captured":
        return await api.paid(order_id=order)
    if status == "failed":
        payment = await api.create(order_id=order)
        error = await api.post(
            f"/payments/{payment['id']}/confirm",
            {"payment_method": "pm_card_chargeDeclined"},
            status=402,
        )
        return dict(error["error"]["payment"])
    if status in ("partially_refunded", "refunded"):
        payment = await api.paid(order_id=order)
        amount = 500 if status == "partially_refunded" else payment["amount"]
        await api.post(f"/payments/{payment['id']}/refunds", {"amount": amount}, SERVICE, 201)
        return await api.get(f"/payments/{payment['id']}", SERVICE)
    assert status == "cancelled"
    payment = await api.create(order_id=order)
    return await api.post(f"/payments/{payment['id']}/cancel")


# The operations the API offers and, per status, whether each one is allowed.
OPERATIONS: dict[str, dict[str, Any]] = {
    "confirm": {"body": {"payment_method": "pm_card_visa"}, "allowed": {"pending"}},
    "capture": {"body": {}, "allowed": {"authorized"}},
    "cancel": {"body": {}, "allowed": {"pending", "requires_action", "authorized"}},
}
REACHABLE = [
    "pending",
    "requires_action",
    "processing",
    "authorized",
    "captured",
    "partially_refunded",
    "refunded",
    "failed",
    "cancelled",
]
EXPECTED_AFTER = {
    ("confirm", "pending"): "captured",
    ("capture", "authorized"): "captured",
    ("cancel", "pending"): "cancelled",
    ("cancel", "requires_action"): "cancelled",
    ("cancel", "authorized"): "cancelled",
}
CASES = [(op, status) for op in OPERATIONS for status in REACHABLE]


@pytest.mark.parametrize(("operation", "status"), CASES, ids=[f"{o}-{s}" for o, s in CASES])
async def test_operation_from_each_status(api: Api, operation: str, status: str) -> None:
    payment = await _in_status(api, status, order=f"o-{operation}-{status}")
    assert payment["status"] == status
    headers = SERVICE  # capture is for service/admin; service may do everything here
    path = f"/payments/{payment['id']}/{operation}"
    if status in OPERATIONS[operation]["allowed"]:
        done = await api.post(path, OPERATIONS[operation]["body"], headers)
        assert done["status"] == EXPECTED_AFTER[(operation, status)]
        return
    refund = await api.client.post(
        f"/payments/{payment['id']}/refunds", json={"amount": 1}, headers=SERVICE
    )
    if status in ("captured", "partially_refunded"):
        assert refund.status == 201  # a refund is the one move from here
        payment = await api.get(f"/payments/{payment['id']}", SERVICE)
        assert payment["status"] == "partially_refunded"
        status = "partially_refunded"
    else:
        assert refund.status == 409, await refund.text()
    error = (await api.post(path, OPERATIONS[operation]["body"], headers, status=409))["error"]
    assert error["type"] == "state_conflict"
    if status == "processing":  # its charge is still open in the ledger
        assert error["code"] == "operation_in_progress"
    else:
        assert error["code"] == "invalid_state_transition"
        assert status in error["message"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    after = await api.get(f"/payments/{payment['id']}", ADMIN)
    assert after["status"] == status
    assert after["updated_at"] == payment["updated_at"]
