"""Money invariants that must hold after any interleaving, checked against our rows and the
sandbox gateway's own ledger."""

from __future__ import annotations

from collections import Counter, defaultdict

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.operations.models import Operation
from paysvc.payments.models import Payment
from paysvc.payments.states import LIVE
from paysvc.refunds.models import Refund
from tests.support import rows

# What each of our statuses must look like at the gateway.
GATEWAY_STATUS = {
    "captured": "captured",
    "partially_refunded": "captured",
    "refunded": "captured",
    "authorized": "authorized",
    "failed": "failed",
    "cancelled": "canceled",
}


async def assert_money_invariants(container: Container) -> None:
    payments = {p.id: p for p in await rows(container, Payment)}
    charges = await rows(container, SandboxCharge)
    ledger_refunds = await rows(container, SandboxRefund)
    ops_of: defaultdict[str, list[Operation]] = defaultdict(list)
    for op in await rows(container, Operation):
        ops_of[op.payment_id].append(op)
    refunds_of: defaultdict[str, list[Refund]] = defaultdict(list)
    for refund in await rows(container, Refund):
        refunds_of[refund.payment_id].append(refund)

    for p in payments.values():
        assert 0 <= p.amount_refunded <= p.amount_captured <= p.amount, p.id
        # Every operation settled, but the confirm of a payment still `processing`.
        for op in ops_of[p.id]:
            settled = op.status in ("succeeded", "failed")
            assert settled or (p.status == "processing" and op.kind in ("charge", "authorize")), (
                p.status,
                op.kind,
                op.status,
                op.last_error,
            )
        mine = refunds_of[p.id]
        succeeded = sum(r.amount for r in mine if r.status == "succeeded")
        pending = sum(r.amount for r in mine if r.status == "pending")
        assert p.amount_refunded == succeeded, p.id
        assert succeeded + pending <= p.amount_captured, p.id
        if p.gateway_reference is not None:
            ledger = sum(
                r.amount
                for r in ledger_refunds
                if r.charge_reference == p.gateway_reference and r.status == "succeeded"
            )
            assert ledger == succeeded, p.id

    # Each payment was charged at most once, and every charge belongs to one of our payments.
    per_payment = Counter(c.payment_id for c in charges)
    assert all(n == 1 for n in per_payment.values()), per_payment
    for charge in charges:
        payment = payments[charge.payment_id]
        if payment.status in GATEWAY_STATUS:
            assert charge.status == GATEWAY_STATUS[payment.status], (payment.id, charge.status)
            assert payment.gateway_reference == charge.reference
            assert payment.amount_captured == charge.amount_captured
            assert payment.amount_refunded == charge.amount_refunded
        else:
            assert payment.status == "processing", (payment.id, payment.status)

    # No order is charged twice: at most one money-taking charge and one live payment per order.
    taken = Counter(
        payments[c.payment_id].order_id for c in charges if c.status in ("captured", "authorized")
    )
    assert all(n == 1 for n in taken.values()), taken
    live = Counter(p.order_id for p in payments.values() if p.status in LIVE)
    assert all(n == 1 for n in live.values()), live
