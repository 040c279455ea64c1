"""Refund use cases, in atomic phases like the payment's gateway calls:

1. a write unit of work locks the payment, checks what is refundable, inserts the refund
   `pending` (it counts against the refundable amount from now on) and commits;
2. the gateway is called with the refund id as idempotency key, holding no database lock;
3. a second unit of work locks the payment, then the refund (fixed order), and records the
   outcome: succeeded adds to `payment.amount_refunded` and moves the payment; failed releases
   the amount; an unknown outcome leaves the refund pending until reconciliation (`reconcile`,
   `settle_pending`, `resend_if_stale`) or a webhook (`apply_gateway_refund`) settles it.

Settling only moves a pending refund forward: succeeded and failed are final. A refund the
gateway reports that we never made (the Stripe dashboard) is booked by `apply_gateway_refund`
when it fits what is refundable.

Refundable = captured - (succeeded + pending refunds); `amount_refunded` is always the sum of
the succeeded refunds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
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
    RefundRequest,
)
from paysvc.gateways.registry import Gateways
from paysvc.ids import new_id
from paysvc.payments.models import Payment
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.service import STALE_AFTER, PaymentService, gateway_failure
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
            raise gateway_failure(result)
        return refund

    # -- settling (reconciliation, webhooks) ---------------------------------------------

    async def settle(self, refund_id: str, truth: GatewayRefund, actor: Actor = SYSTEM) -> Refund:
        """Record the gateway's word on a refund, in a unit of work of its own."""
        refund, _ = await self._settle(refund_id, truth, actor)
        return refund

    async def settle_pending(
        self, refund_id: str, truth: GatewayRefund, actor: Actor = SYSTEM
    ) -> bool:
        """Like `settle`; True only when this call moved the refund (False: it was settled
        meanwhile, e.g. by another reconciler or a webhook, or the gateway is undecided)."""
        _, changed = await self._settle(refund_id, truth, actor)
        return changed

    async def _settle(
        self, refund_id: str, truth: GatewayRefund, actor: Actor
    ) -> tuple[Refund, bool]:
        async def work(session: AsyncSession) -> tuple[Refund, bool]:
            payment, refund = await self._locked(session, refund_id)
            return refund, self._apply(session, payment, refund, truth, actor)  # re-checked

        return await self.db.run(work)

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
        self._apply(session, payment, refund, truth, actor)
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
            pending_since=now,
            created_at=now,
            updated_at=now,
        )
        repo.add(refund)
        await session.flush()
        detail = f"gateway refund {truth.reference}"
        self._history(session, payment, refund, "refund_recorded_from_gateway", actor, detail)
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
            truth = await self.gateway_truth(payment.gateway, refund.id, refund.gateway_reference)
        except GatewayError as error:
            raise gateway_failure(error) from None
        if truth is not None:
            return await self.settle(refund.id, truth, actor)
        resent = await self.resend_if_stale(refund.id, refund.pending_since, actor)
        return resent or await self.get(SYSTEM, refund_id)

    async def gateway_truth(
        self, gateway: str, refund_id: str, reference: str | None
    ) -> GatewayRefund | None:
        """What the refund's gateway says about it (call with no transaction open); None when
        the gateway has no such refund."""
        owner = self.gateways.for_payment(gateway)
        if reference is not None:
            return await owner.retrieve_refund(reference)
        return await owner.find_refund(refund_id)

    async def resend_if_stale(
        self,
        refund_id: str,
        pending_since: dt.datetime | None,
        actor: Actor = SYSTEM,
        *,
        stale: dt.timedelta = STALE_AFTER,
    ) -> Refund | None:
        """A pending refund the gateway has no record of, whose call (handed off at
        `pending_since`) is older than `stale`: send it again with the same idempotency key.
        None when it is not stale, or was settled or resumed by someone else meanwhile."""
        if pending_since is not None and self.clock.now() - pending_since < stale:
            return None  # its request may still be running

        async def resume(session: AsyncSession) -> _Call | None:
            payment, locked = await self._locked(session, refund_id)
            if (
                locked.status != R.PENDING
                or locked.pending_since != pending_since
                or locked.gateway_reference is not None  # the gateway has it: never resend
                or payment.gateway_reference is None
            ):
                return None
            locked.pending_since = locked.updated_at = self.clock.now()
            return _Call(locked.id, payment.gateway, _request(locked, payment.gateway_reference))

        call = await self.db.run(resume)
        return None if call is None else await self._execute(actor, call)

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
