"""Refund use cases. A refund is made by one operation of the ledger (kind `refund`), in
atomic phases:

1. a write unit of work locks the payment, checks what is refundable, inserts the refund
   `pending` (it counts against the refundable amount from now on) and its operation;
2. the gateway is called with the operation's id as idempotency key, holding no database lock;
3. a second unit of work locks the payment, then the refund (fixed order), and projects the
   outcome (`project` -> `_apply`): succeeded adds to `payment.amount_refunded` and moves the
   payment; failed releases the amount; an unknown outcome leaves the refund pending until the
   completer or a webhook (`apply_gateway_refund`) settles it.

A refund the gateway reverses (Stripe moves refunds `succeeded -> failed`) is recorded as a
reversal: `amount_refunded` goes down, the payment's status follows. A refund the gateway
reports that we never made (the Stripe dashboard) is booked by `apply_gateway_refund` when it
fits what is refundable.

Refundable = captured - (succeeded + pending refunds); `amount_refunded` is always the sum of
the succeeded refunds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.db.pagination import Page
from paysvc.errors import (
    CardError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    StateConflict,
)
from paysvc.gateways.base import (
    GatewayError,
    GatewayRefund,
    GatewayRefundStatus,
    GatewayUnavailable,
    OutcomeUnknown,
)
from paysvc.gateways.registry import Gateways
from paysvc.idempotency.service import attach_resource
from paysvc.ids import new_id
from paysvc.logs import payment_id_var
from paysvc.operations.metrics import REFUND_REVERSALS
from paysvc.operations.models import Operation
from paysvc.operations.repository import OperationRepository
from paysvc.operations.service import Call, Outcome, classify
from paysvc.operations.states import OperationKind
from paysvc.operations.states import OperationStatus as OS
from paysvc.payments.models import Payment
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.service import PaymentService, gateway_failure
from paysvc.payments.states import REFUNDABLE, PaymentStatus
from paysvc.refunds.models import Refund
from paysvc.refunds.repository import RefundRepository
from paysvc.refunds.schemas import REFUND_REASONS, render_refund
from paysvc.refunds.states import RefundStatus, check_transition

R = RefundStatus
# History entries that are status changes of a refund, and the event each one sends.
_EVENT_TYPES = {
    "refund_created": "refund.created",
    "refund_recorded_from_gateway": "refund.created",
    "refund_succeeded": "refund.succeeded",
    "refund_failed": "refund.failed",
}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewRefund:
    amount: int | None = None  # None: all that remains refundable
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class RefundService:
    def __init__(
        self,
        db: Database,
        gateways: Gateways,
        clock: Clock,
        audit: AuditLog,
        payments: PaymentService,
    ) -> None:
        self.db = db
        self.gateways = gateways
        self.clock = clock
        self.audit = audit
        self.payments = payments
        self.ledger = payments.ledger

    # -- reads ---------------------------------------------------------------------------

    async def get(self, actor: Actor, refund_id: str) -> Refund:
        """The refund if the actor may see its payment; otherwise exactly like a missing one."""

        async def work(session: AsyncSession) -> Refund:
            refund = await RefundRepository(session).get(refund_id)
            if refund is None:
                raise NotFound("No such refund", param="id")
            payment = await PaymentRepository(session).get(refund.payment_id)
            assert payment is not None  # foreign key
            actor.require_owner(payment.customer_id, "refund", refund_id)
            return refund

        return await self.db.run(work, write=False)

    async def list(
        self, actor: Actor, payment_id: str, *, limit: int, starting_after: str | None
    ) -> Page[Refund]:
        async def work(session: AsyncSession) -> Page[Refund]:
            await self.payments.load(session, actor, payment_id)
            return await RefundRepository(session).list_for_payment(
                payment_id, limit=limit, starting_after=starting_after
            )

        return await self.db.run(work, write=False)

    async def refundable(self, actor: Actor, payment_id: str) -> tuple[Payment, int]:
        """The payment and what may still be refunded on it (0 when it is not refundable)."""

        async def work(session: AsyncSession) -> tuple[Payment, int]:
            payment = await self.payments.load(session, actor, payment_id)
            if payment.status not in REFUNDABLE:
                return payment, 0
            outstanding = await RefundRepository(session).outstanding_total(payment.id)
            return payment, max(payment.amount_captured - outstanding, 0)

        return await self.db.run(work, write=False)

    # -- create --------------------------------------------------------------------------

    async def create(self, actor: Actor, payment_id: str, new: NewRefund) -> Refund:
        """Refund (part of) a captured payment. Returns the refund `succeeded`, `failed` (the
        gateway refused it) or `pending` (answer lost: reconciliation settles it); raises when
        the gateway was unreachable or rejected the request (the refund is then `failed`)."""
        payment_id_var.set(payment_id)
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may create refunds")

        async def begin(session: AsyncSession) -> Call:
            call = await self._begin(session, actor, payment_id, new)
            if call is None:
                raise _exceeds(0)
            return call

        return await self._execute(actor, await self.db.run(begin))

    async def refund_remainder(
        self, actor: Actor, payment_id: str, cancel_reason: str | None
    ) -> Payment:
        """Cancel of a captured payment with `refund_if_captured`: refund everything still
        refundable and return the payment. Raises CardError when the gateway refuses."""
        reason = cancel_reason if cancel_reason in REFUND_REASONS else "requested_by_customer"

        async def begin(session: AsyncSession) -> Call | None:
            return await self._begin(session, actor, payment_id, NewRefund(reason=reason))

        call = await self.db.run(begin)
        if call is not None:
            refund = await self._execute(actor, call)
            if refund.status == R.FAILED:
                payment = await self.payments.get(actor, payment_id)
                raise CardError(
                    f"The gateway refused the refund: {refund.failure_reason}",
                    code="refund_failed",
                    extra={"decline_code": None, "payment": render_payment(payment)},
                )
        return await self.payments.get(actor, payment_id)

    async def _begin(
        self, session: AsyncSession, actor: Actor, payment_id: str, new: NewRefund
    ) -> Call | None:
        """Phase 1. None when a default-amount refund finds nothing left to refund."""
        payment = await self.payments.load(session, actor, payment_id, for_update=True)
        if payment.status not in REFUNDABLE or payment.gateway_reference is None:
            raise StateConflict(f"Cannot refund a payment that is {payment.status}")
        repo = RefundRepository(session)
        refundable = payment.amount_captured - await repo.outstanding_total(payment.id)
        amount = refundable if new.amount is None else new.amount
        if new.amount is None and refundable <= 0:
            return None
        if amount > refundable:
            raise _exceeds(refundable)
        now = self.clock.now()
        refund = Refund(
            id=new_id("re"),
            payment_id=payment.id,
            amount=amount,
            currency=payment.currency,
            status=R.PENDING,
            reason=new.reason,
            meta=new.metadata,
            created_at=now,
            updated_at=now,
        )
        repo.add(refund)
        await session.flush()
        op = self.ledger.open(session, payment, OperationKind.REFUND, amount, refund_id=refund.id)
        await attach_resource(session, op.id)
        self._history(session, payment, refund, "refund_created", actor, new.reason)
        return self.ledger.call_for(payment, op, reason=new.reason)

    async def _execute(self, actor: Actor, call: Call) -> Refund:
        """Phases 2 and 3: call the gateway holding no lock, then record what it said."""
        outcome = await self.ledger.send(call)

        async def finish(session: AsyncSession) -> Refund:
            await self.payments.settle_operation(
                session, call.operation_id, outcome, actor, reason="refunded"
            )
            refund = await RefundRepository(session).get(str(call.refund_id))
            assert refund is not None  # refunds are not deleted
            return refund

        refund = await self.db.run(finish)
        if isinstance(outcome, GatewayError) and not isinstance(outcome, OutcomeUnknown):
            raise gateway_failure(outcome)
        return refund

    async def project(
        self,
        session: AsyncSession,
        payment: Payment,
        op: Operation,
        outcome: Outcome,
        actor: Actor,
    ) -> None:
        """The projection of a refund operation (`PaymentService.project` hands it here, the
        payment locked): settle the operation and move the refund and the payment."""
        assert op.refund_id is not None  # refund operations always name their refund
        refund = await RefundRepository(session).get(op.refund_id, for_update=True)
        assert refund is not None  # refunds are not deleted
        target = classify(op.kind, outcome)
        if isinstance(outcome, GatewayRefund):
            await self._apply(session, payment, refund, outcome, actor)
            return
        if not isinstance(outcome, GatewayError):
            return
        op.last_error = str(outcome)[:500] or type(outcome).__name__
        op.updated_at = self.clock.now()
        if isinstance(outcome, OutcomeUnknown) or op.attempts > 1:
            if isinstance(outcome, OutcomeUnknown) and op.status == OS.PENDING:
                op.next_check_at = self.clock.now()  # nobody waits for it: look it up now
            if refund.status == R.PENDING and op.attempts == 1:
                self._history(session, payment, refund, "refund_outcome_unknown", actor, "gateway")
            return  # only a first attempt's refusal proves nothing moved
        if target == OS.FAILED and refund.status == R.PENDING:
            failure = (
                "gateway_unavailable"
                if isinstance(outcome, GatewayUnavailable)
                else "gateway_rejected"
            )
            self._fail(session, payment, refund, failure, actor)
            self.payments.settle_op(op, OS.FAILED)

    # -- settling (reconciliation, webhooks) ---------------------------------------------

    async def apply_gateway_refund(
        self, session: AsyncSession, payment: Payment, truth: GatewayRefund, actor: Actor = SYSTEM
    ) -> Refund | None:
        """In the caller's unit of work (a webhook's), the caller holding `payment`'s row lock
        (lock order payment, then refund): record the gateway's word on one of its refunds.

        Ours is found by the gateway's id or by our id in the gateway's metadata. A refund we
        have no record of (made in the Stripe dashboard) has moved money, so it is recorded as
        a new refund when it fits what is refundable. None when it cannot be recorded now
        (it does not fit, or it may be one of ours whose answer is still on its way): the
        caller keeps the news for later and reconciliation reports it."""
        repo = RefundRepository(session)
        found = await repo.get_by_reference(truth.reference)
        if found is None and truth.refund_id is not None:
            found = await repo.get(truth.refund_id)
        if found is None:
            return await self._record_from_gateway(session, payment, truth, actor)
        if found.payment_id != payment.id or found.gateway_reference not in (
            None,
            truth.reference,
        ):
            log.warning(
                "gateway refund %s does not match refund %s of payment %s; not applied",
                truth.reference,
                found.id,
                found.payment_id,
            )
            return found
        refund = await repo.get(found.id, for_update=True)
        assert refund is not None  # refunds are not deleted
        await self._apply(session, payment, refund, truth, actor)
        return refund

    async def _record_from_gateway(
        self, session: AsyncSession, payment: Payment, truth: GatewayRefund, actor: Actor
    ) -> Refund | None:
        """A refund the gateway made without us: book it (pending first, then the gateway's
        status through `_apply`, so it is counted exactly like one of ours)."""
        repo = RefundRepository(session)
        if truth.refund_id is None and await repo.has_unreferenced_pending(payment.id):
            return None  # it may be ours, its answer not recorded yet: wait to know
        if truth.status != GatewayRefundStatus.FAILED:  # money left (or is leaving)
            refundable = 0
            if payment.status in REFUNDABLE:
                refundable = payment.amount_captured - await repo.outstanding_total(payment.id)
            if truth.amount > refundable:
                log.warning(
                    "gateway refund %s of %d on payment %s exceeds what is refundable here "
                    "(%d); left for reconciliation",
                    truth.reference,
                    truth.amount,
                    payment.id,
                    max(refundable, 0),
                )
                return None
        now = self.clock.now()
        refund = Refund(
            id=new_id("re"),
            payment_id=payment.id,
            amount=truth.amount,
            currency=payment.currency,
            status=R.PENDING,
            reason=truth.reason if truth.reason in REFUND_REASONS else None,
            meta={},
            gateway_reference=truth.reference,
            created_at=now,
            updated_at=now,
        )
        repo.add(refund)
        await session.flush()
        # In the ledger too, as an operation we never sent (attempts 0): the completer asks
        # the gateway about it by the gateway's id, and never sends it.
        op = self.ledger.open(
            session, payment, OperationKind.REFUND, truth.amount, refund_id=refund.id
        )
        op.attempts = 0
        op.gateway_reference = truth.reference
        detail = f"gateway refund {truth.reference}"
        self._history(session, payment, refund, "refund_recorded_from_gateway", actor, detail)
        await self._apply(session, payment, refund, truth, actor)
        return refund

    # -- shared machinery ----------------------------------------------------------------

    async def _apply(
        self,
        session: AsyncSession,
        payment: Payment,
        refund: Refund,
        truth: GatewayRefund,
        actor: Actor,
    ) -> bool:
        """Move the refund to what the gateway reports, forward only (a succeeded refund the
        gateway reverses is recorded as a reversal), and settle its operation. True when the
        refund changed."""
        refund.gateway_reference = refund.gateway_reference or truth.reference
        op = await OperationRepository(session).for_refund(refund.id, for_update=True)
        if op is not None:
            op.gateway_reference = op.gateway_reference or truth.reference
            settled = classify(op.kind, truth)
            if settled != OS.PENDING:
                self.payments.settle_op(op, settled)
        if refund.status == R.SUCCEEDED and truth.status == GatewayRefundStatus.FAILED:
            self._reverse(session, payment, refund, truth.failure_reason or "reversed", actor)
            return True
        if refund.status != R.PENDING:
            return False
        refund.updated_at = self.clock.now()
        if truth.status == GatewayRefundStatus.FAILED:
            self._fail(session, payment, refund, truth.failure_reason or "failed", actor)
            return True
        if truth.status != GatewayRefundStatus.SUCCEEDED:
            return False  # the gateway has not decided yet
        self._move(refund, R.SUCCEEDED)
        payment.amount_refunded += refund.amount
        payment.updated_at = self.clock.now()
        self._history(session, payment, refund, "refund_succeeded", actor, refund.reason)
        if payment.status in REFUNDABLE:
            target = (
                PaymentStatus.REFUNDED
                if payment.amount_refunded >= payment.amount_captured
                else PaymentStatus.PARTIALLY_REFUNDED
            )
            self.payments.transition(
                session, payment, target, actor, reason=f"refund {refund.id}", amount=refund.amount
            )
        return True

    def _reverse(
        self, session: AsyncSession, payment: Payment, refund: Refund, reason: str, actor: Actor
    ) -> None:
        """The gateway reversed a refund that had succeeded: the money is back on the
        payment. Recorded, never ignored: history, audit, a warning and a metric."""
        self._move(refund, R.FAILED)
        refund.failure_reason = reason[:255]
        payment.amount_refunded -= refund.amount
        payment.updated_at = self.clock.now()
        self._history(session, payment, refund, "refund_reversed", actor, reason)
        log.warning(
            "refund %s of payment %s (%d %s) was reversed by the gateway: %s",
            refund.id,
            payment.id,
            refund.amount,
            refund.currency,
            reason,
        )
        REFUND_REVERSALS.inc()
        if payment.status in (PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED):
            target = (
                PaymentStatus.PARTIALLY_REFUNDED
                if payment.amount_refunded > 0
                else PaymentStatus.CAPTURED
            )
            self.payments.transition(
                session,
                payment,
                target,
                actor,
                reason=f"refund {refund.id} reversed",
                amount=refund.amount,
            )

    def _fail(
        self, session: AsyncSession, payment: Payment, refund: Refund, reason: str, actor: Actor
    ) -> None:
        self._move(refund, R.FAILED)
        refund.failure_reason = reason
        self._history(session, payment, refund, "refund_failed", actor, reason)

    def _move(self, refund: Refund, target: RefundStatus) -> None:
        """The one place a refund's status changes."""
        check_transition(refund.status, target)
        refund.status = target
        refund.updated_at = self.clock.now()

    def _history(
        self,
        session: AsyncSession,
        payment: Payment,
        refund: Refund,
        kind: str,
        actor: Actor,
        detail: str | None,
    ) -> None:
        """Every refund step goes to the payment's history and to the audit trail, and its
        status changes to the outbox."""
        self.payments.note(
            session,
            payment,
            kind,
            actor,
            reason=f"{refund.id}: {detail}" if detail else refund.id,
            amount=refund.amount,
        )
        self.audit.record(
            session,
            actor,
            "refund." + kind.removeprefix("refund_"),
            "refund",
            refund.id,
            outcome="failure" if kind == "refund_failed" else "success",
            details={
                "payment_id": payment.id,
                "amount": refund.amount,
                "currency": refund.currency,
                "status": refund.status,
                "detail": detail,
            },
        )
        if kind in _EVENT_TYPES:
            self.payments.outbox.record(session, _EVENT_TYPES[kind], payment, render_refund(refund))

    @staticmethod
    async def _locked(session: AsyncSession, refund_id: str) -> tuple[Payment, Refund]:
        """Lock the refund's payment, then the refund (fixed order, no deadlocks)."""
        repo = RefundRepository(session)
        found = await repo.get(refund_id)
        if found is None:
            raise NotFound("No such refund", param="id")
        payment = await PaymentRepository(session).get(found.payment_id, for_update=True)
        refund = await repo.get(refund_id, for_update=True)
        assert payment is not None and refund is not None  # foreign key; refunds are not deleted
        return payment, refund


def _exceeds(refundable: int) -> InvalidRequest:
    return InvalidRequest(
        f"amount: at most {max(refundable, 0)} remains refundable on this payment",
        param="amount",
        code="amount_exceeds_refundable",
    )
