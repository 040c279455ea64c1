"""Reconciliation: compare our payments and refunds with the gateway's truth and settle what
differs.

The gateway is asked with no transaction open. Each fix is its own write unit of work under
the payment's row lock (then the refund's), and the drift is assessed again after locking, so
two reconcilers (or a reconciler racing a webhook, a confirm or a refund request) settle each
payment and refund exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock, as_utc
from paysvc.db.engine import Database
from paysvc.errors import PaysvcError
from paysvc.gateways.base import (
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
)
from paysvc.gateways.registry import Gateways
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.service import STALE_AFTER, PaymentService, gateway_target
from paysvc.payments.states import PaymentStatus
from paysvc.reconcile.repository import (
    PaymentSnapshot,
    ReconcileRepository,
    RefundSnapshot,
    snapshot,
)
from paysvc.refunds.service import RefundService
from paysvc.refunds.states import RefundStatus
from paysvc.webhooks.service import WebhookService

log = logging.getLogger(__name__)
RECONCILER = Actor(id="reconciler", role=Role.SERVICE, origin="reconciler")
BATCH = 200
# How far back the background pass looks for stuck payments.
BACKGROUND_WINDOW = dt.timedelta(days=7)
BACKGROUND_STUCK_AFTER = dt.timedelta(minutes=1)

S = PaymentStatus
G = GatewayPaymentStatus
# Our statuses that agree with each gateway status.
AGREES: dict[GatewayPaymentStatus, frozenset[PaymentStatus]] = {
    G.CAPTURED: frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    G.AUTHORIZED: frozenset({S.AUTHORIZED}),
    G.CANCELED: frozenset({S.CANCELLED, S.FAILED}),
    G.FAILED: frozenset({S.FAILED}),
    G.PROCESSING: frozenset({S.PROCESSING}),
    G.REQUIRES_ACTION: frozenset({S.REQUIRES_ACTION}),
}


@dataclass(frozen=True, slots=True)
class Drift:
    id: str  # pay_…, re_…, or evt_… for a gateway refund we could not book
    object: str  # "payment" | "refund"
    kind: str  # status | stuck_operation | missing_at_gateway | amount | unrecorded_refund
    ours: str
    theirs: str
    action: str
    fixable: bool
    applied: bool = False


@dataclass
class Report:
    checked: int = 0  # payments
    checked_refunds: int = 0
    items: list[Drift] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    webhooks_applied: int = 0

    @property
    def drift(self) -> bool:
        return bool(self.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "checked_refunds": self.checked_refunds,
            "drift": [asdict(item) for item in self.items],
            "errors": self.errors,
            "webhooks_applied": self.webhooks_applied,
        }


def in_flight(payment: PaymentSnapshot, now: dt.datetime, stale: dt.timedelta) -> bool:
    """An operation was handed to the gateway less than `stale` ago."""
    return (
        payment.pending_operation is not None
        and payment.pending_since is not None
        and now - as_utc(payment.pending_since) < stale
    )


def assess(
    payment: PaymentSnapshot, truth: GatewayPayment | None, now: dt.datetime, stale: dt.timedelta
) -> Drift | None:
    """What differs between our payment and the gateway's truth, and what would fix it.
    Pure; used before locking (to report) and again after locking (to apply)."""
    operation = payment.pending_operation
    if in_flight(payment, now, stale):
        return None  # the request that set it is still running; it records its own answer
    ours = payment.status if operation is None else f"{payment.status} ({operation} in flight)"

    def drift(kind: str, theirs: str, action: str, fixable: bool) -> Drift:
        return Drift(payment.id, "payment", kind, ours, theirs, action, fixable)

    if truth is None:
        if operation == "confirm":
            return drift("missing_at_gateway", "no record", "clear confirm: back to pending", True)
        if payment.status == S.PROCESSING:
            return drift("missing_at_gateway", "no record", "none: check manually", False)
        return None
    theirs = str(truth.status)
    target = gateway_target(payment.status, truth.status)
    if target is not None:
        kind = "status" if operation is None else "stuck_operation"
        return drift(kind, theirs, f"move to {target}", True)
    if operation is not None:
        return drift("stuck_operation", theirs, f"clear {operation}", True)
    if S(payment.status) not in AGREES[truth.status]:
        return drift("status", theirs, "none: would move backwards, check manually", False)
    if truth.status == G.CAPTURED and payment.amount_captured != truth.amount_captured:
        return Drift(
            payment.id,
            "payment",
            "amount",
            f"captured {payment.amount_captured}",
            f"captured {truth.amount_captured}",
            "none: check manually",
            False,
        )
    return None


def assess_refund(
    refund: RefundSnapshot, truth: GatewayRefund | None, now: dt.datetime, stale: dt.timedelta
) -> Drift | None:
    """What differs between our refund and the gateway's truth, and what would fix it. Pure.
    Only a pending refund is ever moved (to the gateway's final word); anything else that
    differs is for a human."""
    pending = refund.status == RefundStatus.PENDING

    def drift(kind: str, theirs: str, action: str, fixable: bool) -> Drift:
        return Drift(refund.id, "refund", kind, refund.status, theirs, action, fixable)

    if truth is None:
        if pending:
            if refund.pending_since is not None and now - as_utc(refund.pending_since) < stale:
                return None  # its request may still be running
            return drift(
                "missing_at_gateway", "no record", "resend with the same idempotency key", True
            )
        return drift("missing_at_gateway", "no record", "none: check manually", False)
    theirs = str(truth.status)
    if pending:
        if truth.status == GatewayRefundStatus.PENDING:
            return None  # the gateway has not decided either
        return drift("status", theirs, f"move to {theirs}", True)
    if theirs != refund.status:
        return drift("status", theirs, "none: would move backwards, check manually", False)
    if truth.amount != refund.amount:
        return Drift(
            refund.id,
            "refund",
            "amount",
            f"{refund.status} {refund.amount}",
            f"{theirs} {truth.amount}",
            "none: check manually",
            False,
        )
    return None


class ReconcileService:
    def __init__(
        self,
        db: Database,
        gateways: Gateways,
        payments: PaymentService,
        webhooks: WebhookService,
        clock: Clock,
        refunds: RefundService,
    ) -> None:
        self.db = db
        self.gateways = gateways
        self.payments = payments
        self.webhooks = webhooks
        self.clock = clock
        self.refunds = refunds

    async def run_once(self) -> Report:
        """One background pass: settle stuck payments and pending refunds, apply webhooks
        that were waiting."""
        return await self.run(
            BACKGROUND_WINDOW, apply=True, only_stuck_older_than=BACKGROUND_STUCK_AFTER
        )

    async def run(
        self,
        since: dt.timedelta,
        apply: bool,
        only_stuck_older_than: dt.timedelta | None = None,
        actor: Actor = RECONCILER,
    ) -> Report:
        """Compare every payment and refund created in the last `since` (or only the stuck
        ones) with the gateway; with `apply`, settle what differs and apply pending webhook
        events. Refund events that still wait afterwards are reported for a human. Every fix is
        historied and audited under `actor` (the operator, for `paysvc reconcile --apply`)."""
        report = Report()
        now = self.clock.now()
        stale = only_stuck_older_than or STALE_AFTER
        stuck_before = now - only_stuck_older_than if only_stuck_older_than else None
        after: tuple[dt.datetime, str] | None = None
        while True:
            page = await self._page(now - since, stuck_before, after)
            for payment in page:
                await self._check(payment, apply, stale, report, actor)
            if len(page) < BATCH:
                break
            after = (page[-1].created_at, page[-1].id)
        after = None
        while True:
            refunds = await self._refund_page(now - since, stuck_before, after)
            for refund in refunds:
                await self._check_refund(refund, apply, stale, report, actor)
            if len(refunds) < BATCH:
                break
            after = (refunds[-1].created_at, refunds[-1].id)
        if apply:
            report.webhooks_applied = await self.webhooks.retry_pending()
        for event_id in await self.webhooks.waiting_refund_events():
            report.items.append(
                Drift(
                    event_id,
                    "refund",
                    "unrecorded_refund",
                    "no record",
                    "refunded (webhook event)",
                    "none: cannot be booked (over refundable?), check manually",
                    False,
                )
            )
        return report

    async def _page(
        self,
        created_gte: dt.datetime,
        stuck_before: dt.datetime | None,
        after: tuple[dt.datetime, str] | None,
    ) -> list[PaymentSnapshot]:
        async def work(session: AsyncSession) -> list[PaymentSnapshot]:
            return list(
                await ReconcileRepository(session).payments(
                    created_gte=created_gte, stuck_before=stuck_before, after=after, limit=BATCH
                )
            )

        return await self.db.run(work, write=False)

    async def _check(
        self,
        payment: PaymentSnapshot,
        apply: bool,
        stale: dt.timedelta,
        report: Report,
        actor: Actor,
    ) -> None:
        report.checked += 1
        if in_flight(payment, self.clock.now(), stale):
            return  # its own request records the answer; do not even ask
        try:
            gateway = self.gateways.for_payment(payment.gateway)
            truth = (
                await gateway.retrieve_payment(payment.gateway_reference)
                if payment.gateway_reference
                else await gateway.find_payment(payment.id)
            )
        except (GatewayError, KeyError) as error:
            report.errors.append(f"{payment.id}: gateway {payment.gateway}: {type(error).__name__}")
            return
        found = assess(payment, truth, self.clock.now(), stale)
        if found is None:
            return
        if apply and found.fixable:
            applied = await self._settle(payment.id, truth, stale, actor)
            action = found.action if applied else f"{found.action} (already settled meanwhile)"
            found = Drift(**{**asdict(found), "action": action, "applied": applied})
        report.items.append(found)

    async def _settle(
        self, payment_id: str, truth: GatewayPayment | None, stale: dt.timedelta, actor: Actor
    ) -> bool:
        async def work(session: AsyncSession) -> bool:
            payment = await PaymentRepository(session).get(payment_id, for_update=True)
            if payment is None:
                return False
            found = assess(snapshot(payment), truth, self.clock.now(), stale)
            if found is None or not found.fixable:
                return False  # settled by someone else since we looked
            theirs = "no record" if truth is None else f"{truth.status}"
            reason = f"reconciled: gateway reports {theirs}"
            if truth is not None:
                self.payments.apply_gateway_state(session, payment, truth, actor, reason=reason)
            if payment.pending_operation is not None:
                self.payments.abandon_operation(
                    session,
                    payment,
                    truth,
                    actor,
                    reason=f"reconciled: stale {payment.pending_operation} cleared; "
                    f"gateway reports {theirs}",
                )
            return True

        return await self.db.run(work)

    # -- refunds -------------------------------------------------------------------------

    async def _refund_page(
        self,
        created_gte: dt.datetime,
        stuck_before: dt.datetime | None,
        after: tuple[dt.datetime, str] | None,
    ) -> list[RefundSnapshot]:
        async def work(session: AsyncSession) -> list[RefundSnapshot]:
            return list(
                await ReconcileRepository(session).refunds(
                    created_gte=created_gte, stuck_before=stuck_before, after=after, limit=BATCH
                )
            )

        return await self.db.run(work, write=False)

    async def _check_refund(
        self,
        refund: RefundSnapshot,
        apply: bool,
        stale: dt.timedelta,
        report: Report,
        actor: Actor,
    ) -> None:
        report.checked_refunds += 1
        try:  # no transaction is open here
            truth = await self.refunds.gateway_truth(
                refund.gateway, refund.id, refund.gateway_reference
            )
        except (GatewayError, KeyError) as error:
            report.errors.append(f"{refund.id}: gateway {refund.gateway}: {type(error).__name__}")
            return
        found = assess_refund(refund, truth, self.clock.now(), stale)
        if found is None:
            return
        if apply and found.fixable:
            applied, note = await self._settle_refund(refund, truth, stale, actor)
            action = found.action + (note if applied else " (already settled meanwhile)")
            found = Drift(**{**asdict(found), "action": action, "applied": applied})
        report.items.append(found)

    async def _settle_refund(
        self,
        refund: RefundSnapshot,
        truth: GatewayRefund | None,
        stale: dt.timedelta,
        actor: Actor,
    ) -> tuple[bool, str]:
        """Settle under the payment's lock, then the refund's; both re-check that the refund
        is still as we saw it, so a second reconciler (or a webhook) changes nothing."""
        if truth is not None:
            return await self.refunds.settle_pending(refund.id, truth, actor), ""
        try:
            resent = await self.refunds.resend_if_stale(
                refund.id, refund.pending_since, actor, stale=stale
            )
        except PaysvcError as error:  # the gateway refused the resend: the refund failed
            return True, f" (refused: {error.code}; refund failed)"
        if resent is None:
            return False, ""
        return True, f" (now {resent.status})"
