"""The money invariants of a run with faults and crashes, checked against our rows and the
sandbox gateway's own durable ledger (`sandbox_charges`, `sandbox_refunds`). Shared by the
in-process simulation (tests/simulation) and the real-process crash test (scripts/chaos).

Each check returns violations as one-line strings (empty: the run is clean), so a caller can
print a summary, replay a seed, or assert.

- no payment charged twice at the gateway, no order with two charges holding money;
- per payment `refunded <= captured <= amount`, and equal to the gateway's ledger;
- every gateway movement (charge, refund) was made under one of our operations' keys and is
  known locally, with the same outcome;
- every answer to one Idempotency-Key is the same answer, and a key executed at most once: a
  request may tag what it creates with `metadata: {"request_key": KEY}` (`Journal`,
  `keyed_violations`);
- every operation settled: nothing `pending` (an operation `unknown` — no answer inside the
  gateway's idempotency window — is not a violation but is listed by `unknown_operations`, and
  its payment is left out of the comparisons with the gateway: a human decides it).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.idempotency.models import IdempotencyKey
from paysvc.operations.models import Operation
from paysvc.payments.models import Payment
from paysvc.refunds.models import Refund
from tests.support import rows

# What each of our statuses must look like at the gateway.
GATEWAY_STATUS = {
    "captured": "captured",
    "partially_refunded": "captured",
    "refunded": "captured",
    "authorized": "authorized",
    "cancelled": "canceled",
    "failed": "failed",
}


@dataclass
class Journal:
    """Every answer a client got, per Idempotency-Key (answers that executed nothing — lost
    connections, 409 `idempotency_key_in_use`, 429, 503 — are not outcomes and not kept)."""

    answers: defaultdict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    sent: set[str] = field(default_factory=set)

    def answered(self, key: str, status: int, body: Any) -> None:
        """Record an answer. A rejection that is not stored (a 422, say) is answered afresh,
        under the new request's id: the id is not part of the outcome."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            body = {**body, "error": {k: v for k, v in error.items() if k != "request_id"}}
        self.answers[key].append((status, json.dumps(body, sort_keys=True)))

    def violations(self) -> list[str]:
        found = [
            f"key_two_outcomes: {key}: " + " / ".join(f"{s} {b[:160]}" for s, b in set(seen))
            for key, seen in self.answers.items()
            if len(set(seen)) > 1
        ]
        found += [f"key_unanswered: {key}" for key in sorted(self.sent - set(self.answers))]
        return found


async def keyed_violations(container: Container, journal: Journal) -> list[str]:
    """What each tagged request created: at most one payment, or one refund that moved money
    (succeeded or pending), per key — and its answer names that one. (A refund attempt the
    gateway could not be reached for is `failed`, moved nothing, and is answered 503: the
    client retries with the same key and may create another.)"""
    created: defaultdict[str, list[tuple[str, bool]]] = defaultdict(list)
    for payment in await rows(container, Payment):
        key = (payment.meta or {}).get("request_key")
        if key is not None:
            created[key].append((payment.id, True))
    for refund in await rows(container, Refund):
        key = (refund.meta or {}).get("request_key")
        if key is not None:
            created[key].append((refund.id, refund.status != "failed"))
    found: list[str] = []
    for key, made in created.items():
        moving = [i for i, moved in made if moved]
        if len(moving) > 1:
            found.append(f"key_executed_twice: {key} created {moving}")
        for status, body in set(journal.answers.get(key, [])):
            if moving and json.loads(body).get("id") not in moving:
                found.append(
                    f"key_outcome_lost: {key} created {moving} but was answered "
                    f"{status} {body[:160]}"
                )
    return found


async def unknown_operations(container: Container) -> list[Operation]:
    return await rows(container, Operation, Operation.status == "unknown")


async def waiting_on_unknown(container: Container, requests: dict[str, str]) -> set[str]:
    """Of these unanswered requests (Idempotency-Key -> path), those held up by an `unknown`
    operation — the one their first attempt created, or another of the same payment: they are
    answered 409 (`idempotency_key_in_use`, `operation_in_progress`) until a human settles it."""
    unknown = await unknown_operations(container)
    names = {op.id for op in unknown} | {op.refund_id for op in unknown if op.refund_id}
    payments = {op.payment_id for op in unknown}
    records = await rows(container, IdempotencyKey, IdempotencyKey.key.in_(set(requests)))
    held = {r.key for r in records if r.resource_id in names}
    return held | {key for key, path in requests.items() if path.split("/")[2] in payments}


async def ledger_violations(container: Container) -> list[str]:
    payments = {p.id: p for p in await rows(container, Payment)}
    refunds = {r.id: r for r in await rows(container, Refund)}
    charges = await rows(container, SandboxCharge)
    gateway_refunds = await rows(container, SandboxRefund)
    operations = await rows(container, Operation)
    found: list[str] = []
    # Payments with an operation nobody could settle inside the window: for a human.
    undecided = {op.payment_id for op in operations if op.status == "unknown"}
    found += [
        f"pending_left: operation {op.id} ({op.kind} of {op.payment_id}) {op.status}"
        for op in operations
        if op.status in ("pending", "requires_action")
    ]

    refunds_of: defaultdict[str, list[Refund]] = defaultdict(list)
    for refund in refunds.values():
        refunds_of[refund.payment_id].append(refund)
    charges_of: defaultdict[str, list[SandboxCharge]] = defaultdict(list)
    for charge in charges:
        charges_of[charge.payment_id].append(charge)
    gateway_refunds_of: defaultdict[str, list[SandboxRefund]] = defaultdict(list)
    for gateway_refund in gateway_refunds:
        gateway_refunds_of[gateway_refund.charge_reference].append(gateway_refund)

    # No payment charged twice; no order with two charges holding money at once (a fully
    # refunded payment releases its order, as the contract allows).
    taken = [c for c in charges if c.status in ("authorized", "captured")]
    per_payment = Counter(c.payment_id for c in taken)
    found += [f"payment_charged_twice: {p} ({n} charges)" for p, n in per_payment.items() if n > 1]
    holding = [
        c for c in taken if c.amount_captured > c.amount_refunded or c.status == "authorized"
    ]
    per_order = Counter(
        payments[c.payment_id].order_id for c in holding if c.payment_id in payments
    )
    found += [
        f"order_charged_twice: order {o} ({n} charges)" for o, n in per_order.items() if n > 1
    ]

    for p in payments.values():
        if not 0 <= p.amount_refunded <= p.amount_captured <= p.amount:
            found.append(
                f"amounts: {p.id} refunded {p.amount_refunded} captured {p.amount_captured} "
                f"amount {p.amount}"
            )
        if p.id in undecided:
            continue
        if p.status == "processing":
            found.append(f"pending_left: payment {p.id} {p.status}")
        succeeded = sum(r.amount for r in refunds_of[p.id] if r.status == "succeeded")
        if succeeded != p.amount_refunded:
            found.append(
                f"refunds_sum: {p.id} amount_refunded {p.amount_refunded}, succeeded refunds "
                f"{succeeded}"
            )
        mine = [c for c in charges_of[p.id] if c.status != "failed"] or charges_of[p.id]
        if not mine:
            if p.status not in ("pending", "cancelled") or p.amount_captured:
                found.append(f"no_gateway_charge: {p.id} is {p.status} with nothing at the gateway")
            continue
        charge = mine[-1]
        ledger_refunded = sum(
            r.amount for r in gateway_refunds_of[charge.reference] if r.status == "succeeded"
        )
        ours = (
            p.status,
            p.gateway_reference,
            p.amount_captured,
            p.amount_refunded,
        )
        theirs = (charge.status, charge.reference, charge.amount_captured, ledger_refunded)
        if (
            GATEWAY_STATUS.get(p.status) != charge.status
            or p.gateway_reference != charge.reference
            or p.amount_captured != charge.amount_captured
            or p.amount_refunded != ledger_refunded
            or charge.amount_refunded != ledger_refunded
        ):
            found.append(f"gateway_mismatch: {p.id} ours {ours} gateway {theirs}")

    # Every gateway movement is known locally, with the same outcome: made under the key of
    # one of our operations (its id), of the right kind and payment (or refund).
    ops = {op.id: op for op in operations}
    for c in charges:
        op = ops.get(c.idempotency_key)
        if c.payment_id not in payments or op is None or op.payment_id != c.payment_id:
            found.append(f"unknown_gateway_charge: {c.reference} for {c.payment_id}")
        elif op.kind not in ("charge", "authorize"):
            found.append(f"unknown_gateway_charge: {c.reference} under a {op.kind} key")
    for gateway_refund in gateway_refunds:
        local = refunds.get(gateway_refund.refund_id)
        op = ops.get(gateway_refund.idempotency_key)
        if local is None or op is None or op.refund_id != local.id:
            found.append(
                f"unknown_gateway_refund: {gateway_refund.reference} "
                f"({gateway_refund.status} {gateway_refund.amount})"
            )
        elif local.payment_id in undecided:
            continue
        elif local.status != gateway_refund.status or local.amount != gateway_refund.amount:
            found.append(
                f"refund_mismatch: {local.id} ours {local.status} {local.amount} gateway "
                f"{gateway_refund.status} {gateway_refund.amount}"
            )
    at_gateway = {r.refund_id for r in gateway_refunds}
    for refund in refunds.values():
        if refund.payment_id in undecided:
            continue
        if refund.status == "pending":
            found.append(f"pending_left: refund {refund.id}")
        elif refund.status == "succeeded" and refund.id not in at_gateway:
            found.append(f"refund_not_at_gateway: {refund.id} succeeded here only")
    return found
