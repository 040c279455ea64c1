"""Refund use cases, in atomic phases like the payment's gateway calls:

1. a write unit of work locks the payment, checks what is refundable, inserts the refund
   `pending` (it counts against the refundable amount from now on) and commits;
2. the gateway is called with the refund id as idempotency key, holding no database lock;
3. a second unit of work locks the payment, then the refund (fixed order), and records the
   outcome: succeeded adds to `payment.amount_refunded` and moves the payment; failed releases
   the amount; an unknown outcome leaves the refund pending for reconciliation (`reconcile`,
   `settle`, `apply_gateway_refund`).

Refundable = captured - (succeeded + pending refunds); `amount_refunded` is always the sum of
the succeeded refunds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import Clock
from paysvc.db.engine import Database
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
    RefundRequest,
)
from paysvc.gateways.registry import Gateways
from paysvc.ids import new_id
from paysvc.payments.models import Payment
from paysvc.payments.repository import Page, PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.service import STALE_AFTER, PaymentService, _gateway_failure
from paysvc.payments.states import REFUNDABLE, PaymentStatus
from paysvc.refunds.models import Refund
from paysvc.refunds.repository import RefundRepository
from paysvc.refunds.schemas import REFUND_REASONS
from paysvc.refunds.states import RefundStatus, check_transition

R = RefundStatus
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewRefund:
    amount: int | None = None  # None: all that remains refundable
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Call:
    """What phase 2 needs, captured at the end of phase 1."""

    refund_id: str
    gateway: str
    request: RefundRequest


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

    async def stale_pending(self, *, limit: int = 100) -> Sequence[Refund]:
        """Pending refunds whose gateway call is older than STALE_AFTER (for reconciliation)."""

        async def work(session: AsyncSession) -> Sequence[Refund]:
            return await RefundRepository(session).stale_pending(
                self.clock.now() - STALE_AFTER, limit=limit
            )

        return await self.db.run(work, write=False)

    # -- create --------------------------------------------------------------------------

    async def create(self, actor: Actor, payment_id: str, new: NewRefund) -> Refund:
        """Refund (part of) a captured payment. Returns the refund `succeeded`, `failed` (the
        gateway refused it) or `pending` (answer lost: reconciliation settles it); raises when
        the gateway was unreachable or rejected the request (the refund is then `failed`)."""
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may create refunds")

        async def begin(session: AsyncSession) -> _Call:
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

        async def begin(session: AsyncSession) -> _Call | None:
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
    ) -> _Call | None:
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
            pending_since=now,
            created_at=now,
            updated_at=now,
        )
        repo.add(refund)
        await session.flush()
        self._history(session, payment, refund, "refund_created", actor, new.reason)
        return _Call(refund.id, payment.gateway, _request(refund, payment.gateway_reference))

    async def _execute(self, actor: Actor, call: _Call) -> Refund:
        """Phases 2 and 3: call the gateway holding no lock, then record what it said."""
        gateway = self.gateways.for_payment(call.gateway)
        try:
            result: GatewayRefund | GatewayError = await gateway.refund(call.request)
        except GatewayError as error:
            result = error
        except Exception:
            log.exception("unexpected error while refunding %s", call.refund_id)
            result = OutcomeUnknown("unexpected error while refunding")

        async def finish(session: AsyncSession) -> Refund:
            payment, refund = await self._locked(session, call.refund_id)
            if isinstance(result, GatewayRefund):
                self._apply(session, payment, refund, result, actor)
            elif refund.status != R.PENDING:
                pass  # already settled by reconciliation or a webhook
            elif isinstance(result, OutcomeUnknown):
                self._history(session, payment, refund, "refund_outcome_unknown", actor, "gateway")
            else:  # the gateway certainly did nothing
                failure = (
                    "gateway_unavailable"
                    if isinstance(result, GatewayUnavailable)
                    else "gateway_rejected"
                )
                self._fail(session, payment, refund, failure, actor)
            return refund

        refund = await self.db.run(finish)
        if isinstance(result, GatewayError) and not isinstance(result, OutcomeUnknown):
            raise _gateway_failure(result)
        return refund

    # -- settling (reconciliation, webhooks) ---------------------------------------------

    async def settle(self, refund_id: str, truth: GatewayRefund, actor: Actor = SYSTEM) -> Refund:
        """Record the gateway's word on a refund, in a unit of work of its own."""

        async def work(session: AsyncSession) -> Refund:
            payment, refund = await self._locked(session, refund_id)
            self._apply(session, payment, refund, truth, actor)
            return refund

        return await self.db.run(work)

    async def apply_gateway_refund(
        self,
        session: AsyncSession,
        truth: GatewayRefund,
        actor: Actor = SYSTEM,
        *,
        refund_id: str | None = None,
    ) -> Refund | None:
        """In the caller's unit of work (e.g. a webhook's): find the refund by our id or by the
        gateway's reference and record the gateway's word. None when we have no such refund."""
        repo = RefundRepository(session)
        found = (
            await repo.get(refund_id)
            if refund_id is not None
            else await repo.get_by_reference(truth.reference)
        )
        if found is None:
            return None
        payment, refund = await self._locked(session, found.id)
        self._apply(session, payment, refund, truth, actor)
        return refund

    async def reconcile(self, refund_id: str, actor: Actor = SYSTEM) -> Refund:
        """Settle a pending refund by asking its gateway. A stale refund the gateway has never
        seen is sent again with the same idempotency key (it cannot be refunded twice)."""

        async def read(session: AsyncSession) -> tuple[Refund, Payment]:
            refund = await RefundRepository(session).get(refund_id)
            if refund is None:
                raise NotFound("No such refund", param="id")
            payment = await PaymentRepository(session).get(refund.payment_id)
            assert payment is not None  # foreign key
            return refund, payment

        refund, payment = await self.db.run(read, write=False)
        if refund.status != R.PENDING:
            return refund
        try:
            truth = await self.gateways.for_payment(payment.gateway).find_refund(refund.id)
        except GatewayError as error:
            raise _gateway_failure(error) from None
        if truth is not None:
            return await self.settle(refund.id, truth, actor)
        stale = refund.pending_since is None or (
            self.clock.now() - refund.pending_since >= STALE_AFTER
        )
        if not stale or payment.gateway_reference is None:
            return refund

        async def resume(session: AsyncSession) -> _Call | None:
            locked_payment, locked = await self._locked(session, refund_id)
            if locked.status != R.PENDING or locked.pending_since != refund.pending_since:
                return None  # settled or resumed meanwhile
            locked.pending_since = locked.updated_at = self.clock.now()
            request = _request(locked, str(locked_payment.gateway_reference))
            return _Call(locked.id, locked_payment.gateway, request)

        call = await self.db.run(resume)
        if call is None:
            return await self.get(SYSTEM, refund_id)
        return await self._execute(actor, call)

    # -- shared machinery ----------------------------------------------------------------

    def _apply(
        self,
        session: AsyncSession,
        payment: Payment,
        refund: Refund,
        truth: GatewayRefund,
        actor: Actor,
    ) -> bool:
        """Move a pending refund to what the gateway reports; True when it changed."""
        if refund.status != R.PENDING:
            return False
        refund.gateway_reference = refund.gateway_reference or truth.reference
        refund.updated_at = self.clock.now()
        if truth.status == GatewayRefundStatus.FAILED:
            self._fail(session, payment, refund, truth.failure_reason or "failed", actor)
            return True
        if truth.status != GatewayRefundStatus.SUCCEEDED:
            return False  # the gateway has not decided yet
        self._move(refund, R.SUCCEEDED)
        refund.pending_since = None
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

    def _fail(
        self, session: AsyncSession, payment: Payment, refund: Refund, reason: str, actor: Actor
    ) -> None:
        self._move(refund, R.FAILED)
        refund.failure_reason = reason
        refund.pending_since = None
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
        """Every refund step goes to the payment's history and to the audit trail."""
        self.payments.record_event(
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


def _request(refund: Refund, payment_reference: str) -> RefundRequest:
    return RefundRequest(
        refund_id=refund.id,
        payment_reference=payment_reference,
        amount=refund.amount,
        currency=refund.currency,
        reason=refund.reason,
        idempotency_key=refund.id,
    )


def _exceeds(refundable: int) -> InvalidRequest:
    return InvalidRequest(
        f"amount: at most {max(refundable, 0)} remains refundable on this payment",
        param="amount",
        code="amount_exceeds_refundable",
    )
