"""Reconciliation: the completer run over every unresolved operation, plus a comparison of
recent payments and refunds with the gateway's truth.

The gateway is asked with no transaction open. Each fix is its own write unit of work under
the payment's row lock (then the refund's), and the drift is assessed again after locking, so
two reconcilers (or a reconciler racing a webhook, a confirm or a refund request) settle each
payment and refund exactly once. An error on one item is reported with its id and the run
goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.gateways.base import (
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
)
from paysvc.gateways.registry import Gateways
from paysvc.logs import payment_id_var
from paysvc.metrics import Metrics
from paysvc.operations.completer import AUTHENTICATED, WAITING, Completer
from paysvc.operations.states import OperationStatus
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.service import PaymentService, gateway_target
from paysvc.payments.states import LIVE, PaymentStatus
from paysvc.reconcile.repository import (
    PaymentSnapshot,
    ReconcileRepository,
    RefundSnapshot,
)
from paysvc.refunds.repository import RefundRepository
from paysvc.refunds.service import RefundService
from paysvc.refunds.states import RefundStatus
from paysvc.webhooks.service import WebhookService

log = logging.getLogger(__name__)
RECONCILER = Actor(id="reconciler", role=Role.SERVICE, origin="reconciler")
BATCH = 200
# How far back the background pass looks.
BACKGROUND_WINDOW = dt.timedelta(days=7)

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
# Completer results that are news for a report (the others: nothing was due).
# The normal course of things, not drift (3-D Secure payments settle by lookup too).
_QUIET = (
    "not due yet",
    "already settled",
    "settled meanwhile",
    "no answer yet",
    WAITING,
    AUTHENTICATED,
)


@dataclass(frozen=True, slots=True)
class Drift:
    id: str  # pay_…, re_…, or evt_… for a gateway refund we could not book
    object: str  # "payment" | "refund"
    # status | stuck_operation | operation_unknown | order_charged_twice | missing_at_gateway
    # | amount | refund_reversed | unrecorded_refund
    kind: str
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


def assess(payment: PaymentSnapshot, truth: GatewayPayment | None) -> Drift | None:
    """What differs between our payment and the gateway's truth, and what would fix it.
    Pure; used before locking (to report) and again after locking (to apply). A payment with
    an open operation is the completer's."""
    if payment.busy:
        return None

    def drift(kind: str, theirs: str, action: str, fixable: bool) -> Drift:
        return Drift(payment.id, "payment", kind, payment.status, theirs, action, fixable)

    if truth is None:
        if payment.status == S.PROCESSING or payment.gateway_reference is not None:
            return drift("missing_at_gateway", "no record", "none: check manually", False)
        return None
    theirs = str(truth.status)
    target = gateway_target(payment.status, truth.status)
    if target is not None:
        return drift("status", theirs, f"move to {target}", True)
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


def assess_refund(refund: RefundSnapshot, truth: GatewayRefund | None) -> Drift | None:
    """What differs between a settled refund and the gateway's truth. Pure. A refund the
    gateway reversed (succeeded -> failed) is recorded; anything else is for a human."""

    def drift(kind: str, theirs: str, action: str, fixable: bool) -> Drift:
        return Drift(refund.id, "refund", kind, refund.status, theirs, action, fixable)

    if truth is None:
        return drift("missing_at_gateway", "no record", "none: check manually", False)
    theirs = str(truth.status)
    if refund.status == RefundStatus.SUCCEEDED and truth.status == GatewayRefundStatus.FAILED:
        return drift("refund_reversed", theirs, "record the reversal", True)
    if truth.status == GatewayRefundStatus.PENDING or theirs == refund.status:
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
    return drift("status", theirs, "none: would move backwards, check manually", False)


class ReconcileService:
    def __init__(
        self,
        db: Database,
        gateways: Gateways,
        payments: PaymentService,
        webhooks: WebhookService,
        clock: Clock,
        refunds: RefundService,
        completer: Completer,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.db = db
        self.gateways = gateways
        self.payments = payments
        self.webhooks = webhooks
        self.clock = clock
        self.refunds = refunds
        self.completer = completer
        # Run after each applying completer pass: work that waits for operations' outcomes
        # (settling the payments of cancelled orders).
        self.after_completion: list[Callable[[Actor], Awaitable[object]]] = []

    async def run_once(self) -> Report:
        """One background pass: the completer over operations stuck past the background age,
        and webhook events that were waiting for their payment."""

        async def background() -> Report:
            report = Report()
            await self._complete(report, apply=True, actor=RECONCILER, background=True)
            report.webhooks_applied = await self.webhooks.retry_pending()
            return report

        return await self._counted("background", background())

    async def run(
        self,
        since: dt.timedelta,
        apply: bool,
        actor: Actor = RECONCILER,
        progress: Callable[[Report], None] | None = None,
        trigger: str = "cli",
    ) -> Report:
        """Counted in `paysvc_reconcile_runs_total` (by trigger and outcome) and
        `paysvc_reconcile_drift_total` (by kind)."""
        return await self._counted(trigger, self._run(since, apply, actor, progress))

    async def _counted(self, trigger: str, run: Awaitable[Report]) -> Report:
        try:
            report = await run
        except BaseException:
            self.metrics.reconcile_runs.labels(trigger, "error").inc()
            raise
        self.metrics.reconcile_runs.labels(trigger, "error" if report.errors else "ok").inc()
        for item in report.items:
            self.metrics.reconcile_drift.labels(item.kind).inc()
        return report

    async def _run(
        self,
        since: dt.timedelta,
        apply: bool,
        actor: Actor,
        progress: Callable[[Report], None] | None,
    ) -> Report:
        """The completer over every operation that is due, the unknown and double-charged
        ones reported, then every payment and refund created in the last `since` compared
        with the gateway; with `apply`, settle what differs and apply pending webhook events.
        Every fix is historied and audited under `actor` (the operator, for
        `paysvc reconcile --apply`). `progress(report)` is called after each payment and refund
        checked."""
        report = Report()
        now = self.clock.now()
        await self._complete(report, apply=apply, actor=actor, background=False)
        after: tuple[dt.datetime, str] | None = None
        while True:
            page = await self._page(now - since, after)
            for payment in page:
                await self._guarded(report, payment.id, self._check(payment, apply, report, actor))
                if progress is not None:
                    progress(report)
            if len(page) < BATCH:
                break
            after = (page[-1].created_at, page[-1].id)
        after = None
        while True:
            refunds = await self._refund_page(now - since, after)
            for refund in refunds:
                await self._guarded(
                    report, refund.id, self._check_refund(refund, apply, report, actor)
                )
                if progress is not None:
                    progress(report)
            if len(refunds) < BATCH:
                break
            after = (refunds[-1].created_at, refunds[-1].id)
        if apply:
            report.webhooks_applied = await self.webhooks.retry_pending()
        for event_id in await self.webhooks.waiting_payment_events():
            report.items.append(
                Drift(
                    event_id,
                    "payment",
                    "order_charged_twice",
                    "paid under another intent",
                    "captured or authorized (webhook event)",
                    "none: proposed refund of that intent at the gateway; check manually",
                    False,
                )
            )
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

    # -- operations ----------------------------------------------------------------------

    async def _complete(
        self, report: Report, *, apply: bool, actor: Actor, background: bool
    ) -> None:
        # The background pass re-sends only operations older than the stuck age (it leaves
        # fresher ones to lookups and the client's own retries); a reconcile run looks every
        # pending operation up, re-sending those that are due.
        timing = self.completer.ledger.timing
        done = await self.completer.run(
            apply=apply,
            actor=actor,
            every_pending=not background,
            resend_after=timing.stuck_after if background else dt.timedelta(),
        )
        report.errors.extend(done.errors)
        for follow_up in self.after_completion if apply else ():
            try:
                await follow_up(actor)
            except Exception as error:  # reported; the pass goes on
                log.warning("after completion: %s", error, exc_info=True)
                report.errors.append(f"after completion: {type(error).__name__}")
        for item in done.completed:
            if item.action in _QUIET:
                continue
            unknown = item.status == OperationStatus.UNKNOWN
            report.items.append(
                Drift(
                    item.refund_id or item.payment_id,
                    "refund" if item.refund_id else "payment",
                    "operation_unknown" if unknown else "stuck_operation",
                    f"{item.kind} {item.operation_id} pending",
                    item.status,
                    item.action,
                    fixable=not unknown,
                    applied=apply and not unknown,
                )
            )
        reported = {item.operation_id for item in done.completed if item.action not in _QUIET}
        for op in await self.completer.unknown():
            if op.id in reported:
                continue
            if not background:  # a definitive answer may have come since: ask (never re-send)
                try:
                    settled = await self.completer.complete(op.id, apply=apply, actor=actor)
                except Exception as error:
                    report.errors.append(f"{op.id}: {type(error).__name__}")
                    settled = None
                if settled is not None and settled.status != OperationStatus.UNKNOWN:
                    report.items.append(
                        Drift(
                            op.refund_id or op.payment_id,
                            "refund" if op.refund_id else "payment",
                            "operation_unknown",
                            f"{op.kind} {op.id} unknown",
                            settled.status,
                            settled.action,
                            True,
                            apply,
                        )
                    )
                    continue
            report.items.append(
                Drift(
                    op.refund_id or op.payment_id,
                    "refund" if op.refund_id else "payment",
                    "operation_unknown",
                    f"{op.kind} {op.id} of {op.amount} {op.currency} unknown",
                    "no answer inside the gateway's idempotency window",
                    "none: never re-sent automatically; check with the gateway",
                    False,
                )
            )
        await self.completer.update_metrics()
        for op, payment in await self.completer.charged_twice():
            report.items.append(
                Drift(
                    payment.id,
                    "payment",
                    "order_charged_twice",
                    f"{payment.status}, {op.kind} {op.id} succeeded; its order "
                    f"{payment.order_id} is paid by another payment",
                    f"{op.kind} succeeded {op.gateway_reference}",
                    f"none: proposed refund of {op.amount} {op.currency} "
                    f"on {op.gateway_reference} at the gateway",
                    False,
                )
            )

    async def _guarded(self, report: Report, item_id: str, work: Awaitable[None]) -> None:
        """One item's failure is reported with its id; the run goes on."""
        try:
            await work
        except Exception as error:
            log.warning("reconciling %s failed: %s", item_id, error, exc_info=True)
            report.errors.append(f"{item_id}: {type(error).__name__}: {error}"[:300])

    # -- payments ------------------------------------------------------------------------

    async def _page(
        self, created_gte: dt.datetime, after: tuple[dt.datetime, str] | None
    ) -> list[PaymentSnapshot]:
        async def work(session: AsyncSession) -> list[PaymentSnapshot]:
            return list(
                await ReconcileRepository(session).payments(
                    created_gte=created_gte, after=after, limit=BATCH
                )
            )

        return await self.db.run(work, write=False)

    async def _check(
        self, payment: PaymentSnapshot, apply: bool, report: Report, actor: Actor
    ) -> None:
        report.checked += 1
        payment_id_var.set(payment.id)
        if payment.busy:
            return  # the completer's
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
        if truth is not None and await self._charged_twice(payment, truth):
            report.items.append(
                Drift(
                    payment.id,
                    "payment",
                    "order_charged_twice",
                    f"{payment.status}; its order is paid by another payment",
                    f"{truth.status} {truth.reference}",
                    f"none: proposed refund of {truth.amount_captured or truth.amount} "
                    f"{truth.currency} on {truth.reference} at the gateway",
                    False,
                )
            )
            return
        found = assess(payment, truth)
        if found is None:
            return
        if apply and found.fixable and truth is not None:
            applied = await self._settle(payment.id, truth, actor)
            action = found.action if applied else f"{found.action} (already settled meanwhile)"
            found = Drift(**{**asdict(found), "action": action, "applied": applied})
        report.items.append(found)

    async def _charged_twice(self, payment: PaymentSnapshot, truth: GatewayPayment) -> bool:
        """The gateway holds money for this payment while another payment holds its order."""
        if truth.status not in (G.CAPTURED, G.AUTHORIZED) or S(payment.status) in LIVE:
            return False
        if payment.status in (S.REFUNDED, S.CANCELLED):
            return False

        async def work(session: AsyncSession) -> bool:
            return await ReconcileRepository(session).order_held_by_another(payment.id)

        return await self.db.run(work, write=False)

    async def _settle(self, payment_id: str, truth: GatewayPayment, actor: Actor) -> bool:
        async def work(session: AsyncSession) -> bool:
            payment = await PaymentRepository(session).get(payment_id, for_update=True)
            if payment is None:
                return False
            now = await ReconcileRepository(session).payment(payment_id)
            found = None if now is None else assess(now, truth)
            if found is None or not found.fixable:
                return False  # settled by someone else since we looked
            reason = f"reconciled: gateway reports {truth.status}"
            return await self.payments.apply_gateway_state(
                session, payment, truth, actor, reason=reason
            )

        return await self.db.run(work)

    # -- refunds -------------------------------------------------------------------------

    async def _refund_page(
        self, created_gte: dt.datetime, after: tuple[dt.datetime, str] | None
    ) -> list[RefundSnapshot]:
        async def work(session: AsyncSession) -> list[RefundSnapshot]:
            return list(
                await ReconcileRepository(session).refunds(
                    created_gte=created_gte, after=after, limit=BATCH
                )
            )

        return await self.db.run(work, write=False)

    async def _check_refund(
        self, refund: RefundSnapshot, apply: bool, report: Report, actor: Actor
    ) -> None:
        report.checked_refunds += 1
        payment_id_var.set(refund.payment_id)
        try:  # no transaction is open here
            owner = self.gateways.for_payment(refund.gateway)
            truth = (
                await owner.retrieve_refund(refund.gateway_reference)
                if refund.gateway_reference
                else await owner.find_refund(refund.id)
            )
        except (GatewayError, KeyError) as error:
            report.errors.append(f"{refund.id}: gateway {refund.gateway}: {type(error).__name__}")
            return
        found = assess_refund(refund, truth)
        if found is None:
            return
        if apply and found.fixable and truth is not None:
            applied = await self._settle_refund(refund, truth, actor)
            action = found.action if applied else f"{found.action} (already settled meanwhile)"
            found = Drift(**{**asdict(found), "action": action, "applied": applied})
        report.items.append(found)

    async def _settle_refund(
        self, refund: RefundSnapshot, truth: GatewayRefund, actor: Actor
    ) -> bool:
        """Under the payment's lock, then the refund's (in `apply_gateway_refund`)."""

        async def work(session: AsyncSession) -> bool:
            payment = await PaymentRepository(session).get(refund.payment_id, for_update=True)
            current = await RefundRepository(session).get(refund.id)
            if payment is None or current is None or current.status != refund.status:
                return False  # settled by someone else since we looked
            await self.refunds.apply_gateway_refund(session, payment, truth, actor)
            return True

        return await self.db.run(work)
