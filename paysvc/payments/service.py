"""Payment use cases. Gateway calls follow the atomic-phases pattern:

1. a write unit of work records the intent (`pending_operation`, the recovery point) and commits;
2. the gateway is called with an idempotency key derived from our ids, holding no database lock;
3. a second unit of work records the outcome.

A crash or lost answer between 1 and 3 is recovered by a retry with the same key (after
`STALE_AFTER`) or by reconciliation; never by charging twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock, rfc3339
from paysvc.db.engine import Database
from paysvc.db.pagination import Page
from paysvc.errors import (
    CardError,
    GatewayUnavailableError,
    InvalidRequest,
    NotFound,
    PaysvcError,
    PermissionDenied,
    StateConflict,
)
from paysvc.gateways.base import (
    CardDeclined,
    ChargeRequest,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
)
from paysvc.gateways.registry import Gateways
from paysvc.ids import new_id, plausible
from paysvc.payments.models import Payment, PaymentEvent
from paysvc.payments.repository import PaymentFilter, PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.states import REFUNDABLE, PaymentStatus, check_transition

S = PaymentStatus
T = TypeVar("T")
STALE_AFTER = dt.timedelta(seconds=60)
log = logging.getLogger(__name__)
# Called with a payment id after a confirm settled (e.g. to apply webhooks that came early).
ConfirmListener = Callable[[str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class NewIntent:
    order_id: str
    amount: int
    currency: str
    customer_id: str | None = None
    payment_method: str | None = None
    capture_method: str = "automatic"
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    receipt_email: str | None = None


# Refunds everything still refundable on a payment and returns it (set by bootstrap to
# RefundService.refund_remainder; a hook rather than a constructor argument, as refunds
# depend on payments).
RefundRemainder = Callable[[Actor, str, str | None], Awaitable[Payment]]


class PaymentService:
    def __init__(self, db: Database, gateways: Gateways, clock: Clock, audit: AuditLog) -> None:
        self.db = db
        self.gateways = gateways
        self.clock = clock
        self.audit = audit
        self.refund_remainder: RefundRemainder | None = None
        self.confirm_listeners: list[ConfirmListener] = []

    # -- reads ---------------------------------------------------------------------------

    async def get(self, actor: Actor, payment_id: str) -> Payment:
        async def work(session: AsyncSession) -> Payment:
            return await self.load(session, actor, payment_id)

        return await self.db.run(work, write=False)

    async def list(
        self, actor: Actor, where: PaymentFilter, *, limit: int, starting_after: str | None
    ) -> Page[Payment]:
        if not actor.is_staff:
            where = PaymentFilter(
                customer_id=actor.id, order_id=where.order_id, status=where.status
            )

        async def work(session: AsyncSession) -> Page[Payment]:
            return await PaymentRepository(session).list(
                where, limit=limit, starting_after=starting_after
            )

        return await self.db.run(work, write=False)

    async def admin_list(
        self, actor: Actor, where: PaymentFilter, *, limit: int, starting_after: str | None
    ) -> Page[Payment]:
        """`GET /admin/payments`: every customer's payments (admins only), the read audited."""
        if actor.role != Role.ADMIN:
            raise PermissionDenied("Admin only")

        async def work(session: AsyncSession) -> Page[Payment]:
            page = await PaymentRepository(session).list(
                where, limit=limit, starting_after=starting_after
            )
            self.audit.record(
                session,
                actor,
                "payments.admin_list",
                "payment",
                None,
                details={
                    "filter": {
                        name: rfc3339(value) if isinstance(value, dt.datetime) else value
                        for name, value in asdict(where).items()
                        if value is not None
                    },
                    "returned": len(page.items),
                },
            )
            return page

        return await self.db.run(work)

    async def load(
        self, session: AsyncSession, actor: Actor, payment_id: str, *, for_update: bool = False
    ) -> Payment:
        """The payment if the actor may see it; a stranger's payment is simply not found."""
        if not plausible(payment_id):
            raise NotFound("No such payment", param="id")
        payment = await PaymentRepository(session).get(payment_id, for_update=for_update)
        if payment is None:
            raise NotFound("No such payment", param="id")
        actor.require_owner(payment.customer_id, "payment", payment_id)
        return payment

    # -- create --------------------------------------------------------------------------

    async def create_intent(self, actor: Actor, intent: NewIntent) -> Payment:
        customer_id = intent.customer_id
        if not actor.is_staff:
            if customer_id not in (None, actor.id):
                raise PermissionDenied(
                    "customer_id may only be set by service or admin callers", param="customer_id"
                )
            customer_id = actor.id
        elif customer_id is None:
            raise InvalidRequest(
                "customer_id: required for service and admin callers", param="customer_id"
            )

        async def work(session: AsyncSession) -> Payment:
            now = self.clock.now()
            payment = Payment(
                id=new_id("pay"),
                order_id=intent.order_id,
                customer_id=customer_id,
                amount=intent.amount,
                currency=intent.currency,
                amount_capturable=0,
                amount_captured=0,
                amount_refunded=0,
                status=S.PENDING,
                capture_method=intent.capture_method,
                confirm_attempts=0,
                payment_method=intent.payment_method,
                description=intent.description,
                meta=intent.metadata,
                receipt_email=intent.receipt_email,
                disputed=False,
                gateway=self.gateways.primary.name,
                created_at=now,
                updated_at=now,
            )
            repo = PaymentRepository(session)
            repo.add(payment)
            await session.flush()
            self._event(session, payment, "created", None, S.PENDING, actor, amount=payment.amount)
            self.audit.record(
                session,
                actor,
                "payment.create",
                "payment",
                payment.id,
                details={
                    "order_id": intent.order_id,
                    "amount": intent.amount,
                    "currency": intent.currency,
                },
            )
            return payment

        return await self.db.run(work)

    # -- confirm -------------------------------------------------------------------------

    async def confirm(
        self,
        actor: Actor,
        payment_id: str,
        payment_method: str | None,
        return_url: str | None = None,
    ) -> Payment:
        """Charge (or authorize) the payment. Returns it `captured`/`authorized`,
        `requires_action` when the customer must authenticate (3-D Secure), or `processing`
        when the gateway's answer was lost; raises CardError on a decline.

        Confirming a `requires_action` payment again (empty body) never charges: it asks the
        gateway how the authentication ended and settles the payment (`settle_action`)."""

        async def begin(session: AsyncSession) -> tuple[ChargeRequest, bool] | None:
            payment = await self.load(session, actor, payment_id, for_update=True)
            resuming = self._take_over(payment, "confirm")
            if not resuming and payment.status == S.REQUIRES_ACTION:
                if payment_method is not None or return_url is not None:
                    raise StateConflict(
                        "Cannot confirm a payment that is requires_action with new parameters: "
                        "it awaits the customer's authentication; confirm it again with an "
                        "empty body to learn the outcome, or cancel it"
                    )
                return None
            if not resuming:
                if payment.status != S.PENDING:
                    raise StateConflict(f"Cannot confirm a payment that is {payment.status}")
                method = payment_method or payment.payment_method
                if not method:
                    raise InvalidRequest("payment_method: required", param="payment_method")
                repo = PaymentRepository(session)
                if await repo.order_is_held(payment.order_id, other_than=payment.id):
                    raise order_already_paid_error()
                payment.payment_method = method
                payment.return_url = return_url
                payment.confirm_attempts += 1
            self._mark(payment, "confirm")
            try:
                await session.flush()
            except IntegrityError:
                raise order_already_paid_error() from None
            request = ChargeRequest(
                payment_id=payment.id,
                order_id=payment.order_id,
                amount=payment.amount,
                currency=payment.currency,
                capture_method=payment.capture_method,
                payment_method=str(payment.payment_method),
                idempotency_key=f"{payment.id}-confirm-{payment.confirm_attempts}",
                return_url=payment.return_url,
            )
            return request, resuming

        begun = await self.db.run(begin)
        if begun is None:
            return await self.settle_action(actor, payment_id, raise_decline=True)
        request, resuming = begun
        result = await self._charge(request, resuming)

        async def finish(session: AsyncSession) -> Payment:
            payment = await self._locked(session, payment_id)
            if payment.pending_operation != "confirm":
                return payment  # already settled by reconciliation or a webhook
            self._clear(payment)
            payment.gateway = result.gateway or payment.gateway  # who took (or may have) it
            if isinstance(result, GatewayPayment):
                self.apply_gateway_state(session, payment, result, actor, reason="confirmed")
            elif isinstance(result, CardDeclined):
                if result.payment is not None:
                    self._remember(payment, result.payment)
                payment.failure_code = result.decline.code
                payment.failure_decline_code = result.decline.decline_code
                payment.failure_message = result.decline.message
                self.transition(session, payment, S.FAILED, actor, reason=result.decline.code)
            elif isinstance(result, OutcomeUnknown):
                self.transition(
                    session, payment, S.PROCESSING, actor, reason="gateway outcome unknown"
                )
            return payment

        payment = await self.db.run(finish)
        await self._notify_confirmed(payment)
        if isinstance(result, CardDeclined):
            raise CardError(
                result.decline.message,
                code=result.decline.code,
                extra={
                    "decline_code": result.decline.decline_code,
                    "payment": render_payment(payment),
                },
            )
        if isinstance(result, GatewayError) and not isinstance(result, OutcomeUnknown):
            raise gateway_failure(result)
        return payment

    async def settle_action(
        self, actor: Actor, payment_id: str, *, raise_decline: bool = False
    ) -> Payment:
        """Ask the gateway how a `requires_action` payment's authentication ended and settle
        the payment (forward only, under its row lock). Never charges. Used by the owner's
        empty re-confirm and by the sandbox's authentication page; with `raise_decline`, a
        failed authentication raises the 402 card error with the failed payment."""

        async def read(session: AsyncSession) -> Payment:
            return await self.load(session, actor, payment_id)

        payment = await self.db.run(read, write=False)
        if payment.status == S.REQUIRES_ACTION and payment.gateway_reference:
            gateway = self.gateways.for_payment(payment.gateway)
            try:
                truth = await gateway.retrieve_payment(payment.gateway_reference)
            except GatewayError as error:
                raise gateway_failure(error) from None

            async def settle(session: AsyncSession) -> Payment:
                locked = await self._locked(session, payment_id)
                self.apply_gateway_state(
                    session, locked, truth, actor, reason="authentication settled"
                )
                return locked

            payment = await self.db.run(settle)
        if raise_decline and payment.status == S.FAILED and payment.failure_code:
            raise CardError(
                payment.failure_message or "The payment failed",
                code=payment.failure_code,
                extra={
                    "decline_code": payment.failure_decline_code,
                    "payment": render_payment(payment),
                },
            )
        return payment

    async def _charge(
        self, request: ChargeRequest, resuming: bool
    ) -> GatewayPayment | GatewayError:
        """Phase 2 of confirm. A resumed attempt first asks every gateway whether the lost
        attempt went through, so a crash between charge and record never charges twice."""
        if resuming:
            try:
                found = await self.gateways.primary.find_payment(request.payment_id)
            except Exception:  # cannot tell whether the lost attempt charged: never guess
                return OutcomeUnknown("could not look up the earlier attempt")
            if found is not None:
                return found
        try:
            return await self.gateways.primary.charge(request)
        except GatewayError as error:
            return error
        except Exception:  # anything unexpected: the charge may have happened
            return OutcomeUnknown("unexpected error while charging")

    # -- capture -------------------------------------------------------------------------

    async def capture(self, actor: Actor, payment_id: str, amount: int | None) -> Payment:
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may capture payments")

        async def begin(session: AsyncSession) -> tuple[str, int, str]:
            payment = await self.load(session, actor, payment_id, for_update=True)
            resuming = self._take_over(payment, "capture")
            if not resuming:
                if payment.status != S.AUTHORIZED:
                    raise StateConflict(f"Cannot capture a payment that is {payment.status}")
                to_capture = payment.amount_capturable if amount is None else amount
                if to_capture > payment.amount_capturable:
                    raise InvalidRequest(
                        f"amount_to_capture: at most {payment.amount_capturable} is capturable",
                        param="amount_to_capture",
                        code="amount_exceeds_capturable",
                    )
                payment.amount_capturable = to_capture  # the rest is released at capture
            self._mark(payment, "capture")
            return str(payment.gateway_reference), payment.amount_capturable, payment.gateway

        reference, to_capture, gateway_name = await self.db.run(begin)
        gateway = self.gateways.for_payment(gateway_name)
        return await self._finish_operation(
            actor,
            payment_id,
            "capture",
            lambda: gateway.capture(reference, to_capture, f"{payment_id}-capture"),
            reason="captured",
        )

    # -- cancel --------------------------------------------------------------------------

    async def cancel(
        self, actor: Actor, payment_id: str, reason: str | None, refund_if_captured: bool = False
    ) -> Payment:
        if refund_if_captured and not actor.is_staff:
            raise PermissionDenied(
                "refund_if_captured is for service or admin callers", param="refund_if_captured"
            )

        refund_instead = False

        async def begin(session: AsyncSession) -> tuple[Payment, str | None]:
            nonlocal refund_instead
            payment = await self.load(session, actor, payment_id, for_update=True)
            if self._take_over(payment, "cancel"):
                return payment, str(payment.gateway_reference)
            if refund_if_captured and payment.status in REFUNDABLE and self.refund_remainder:
                refund_instead = True
                return payment, None
            if payment.status == S.PENDING:
                payment.cancellation_reason = reason
                self.transition(session, payment, S.CANCELLED, actor, reason=reason or "cancelled")
                return payment, None
            if payment.status not in (S.AUTHORIZED, S.REQUIRES_ACTION):
                raise StateConflict(f"Cannot cancel a payment that is {payment.status}")
            payment.cancellation_reason = reason
            self._mark(payment, "cancel")
            return payment, str(payment.gateway_reference)

        payment, reference = await self.db.run(begin)
        if refund_instead and self.refund_remainder is not None:
            # Outside the unit of work above: the refund runs its own atomic phases.
            return await self.refund_remainder(actor, payment_id, reason)
        if reference is None:
            return payment
        gateway = self.gateways.for_payment(payment.gateway)

        async def void() -> GatewayPayment:
            try:
                return await gateway.cancel(reference, f"{payment_id}-cancel")
            except GatewayRejected:
                # E.g. the customer finished authenticating meanwhile: record what it is.
                return await gateway.retrieve_payment(reference)

        cancelled = await self._finish_operation(
            actor, payment_id, "cancel", void, reason=reason or "cancelled"
        )
        if cancelled.status != S.CANCELLED:
            raise StateConflict(
                f"The payment became {cancelled.status} before it could be cancelled"
            )
        return cancelled

    # -- shared machinery ----------------------------------------------------------------

    async def _finish_operation(
        self,
        actor: Actor,
        payment_id: str,
        operation: str,
        call: Callable[[], Awaitable[GatewayPayment]],
        *,
        reason: str,
    ) -> Payment:
        """Phase 2 and 3 of capture/cancel: call the gateway, then record what it said."""
        try:
            result: GatewayPayment | GatewayError = await call()
        except GatewayError as error:
            result = error
        except Exception:
            result = OutcomeUnknown(f"unexpected error during {operation}")

        async def finish(session: AsyncSession) -> Payment:
            payment = await self._locked(session, payment_id)
            if payment.pending_operation != operation:
                return payment
            if isinstance(result, GatewayPayment):
                self._clear(payment)
                self.apply_gateway_state(session, payment, result, actor, reason=reason)
            elif not isinstance(result, OutcomeUnknown):
                self._clear(payment)  # the gateway certainly did nothing
                if operation == "capture":
                    payment.amount_capturable = payment.amount
            return payment

        payment = await self.db.run(finish)
        if isinstance(result, OutcomeUnknown):
            raise GatewayUnavailableError(
                f"The gateway did not answer the {operation}; it will be reconciled",
                code="gateway_outcome_unknown",
                http_status=502,
            )
        if isinstance(result, GatewayError):
            raise gateway_failure(result)
        return payment

    def apply_gateway_state(
        self,
        session: AsyncSession,
        payment: Payment,
        truth: GatewayPayment,
        actor: Actor,
        *,
        reason: str,
    ) -> bool:
        """Move the payment forward to what the gateway reports. Never moves it backwards.
        Returns True when something changed. Used by confirm, capture, cancel,
        reconciliation and webhooks alike. An in-flight operation marker the truth
        resolves (e.g. a confirm whose answer a webhook brought first) is cleared."""
        self._remember(payment, truth)
        if (
            truth.next_action is not None
            and truth.status == GatewayPaymentStatus.REQUIRES_ACTION
            and payment.status in (S.PENDING, S.REQUIRES_ACTION)
        ):
            payment.next_action = truth.next_action.as_dict()
        target = gateway_target(payment.status, truth.status)
        if target is None:
            return False
        if target == S.FAILED:
            if truth.decline is not None:
                payment.failure_code = truth.decline.code
                payment.failure_decline_code = truth.decline.decline_code
                payment.failure_message = truth.decline.message
            elif truth.status == GatewayPaymentStatus.CANCELED:
                payment.failure_code = "payment_intent_canceled"
                payment.failure_message = "The gateway cancelled the payment"
        if target == S.CAPTURED:
            payment.amount_captured = truth.amount_captured
            payment.amount_capturable = 0
        elif target == S.AUTHORIZED:
            payment.amount_capturable = truth.amount_capturable
        elif target == S.CANCELLED:
            payment.amount_capturable = 0
        self.transition(session, payment, target, actor, reason=reason)
        if payment.pending_operation is not None and operation_resolved(
            payment.pending_operation, target
        ):
            self._clear(payment)
        return True

    def abandon_operation(
        self,
        session: AsyncSession,
        payment: Payment,
        truth: GatewayPayment | None,
        actor: Actor,
        *,
        reason: str,
    ) -> None:
        """Clear an in-flight marker whose operation the gateway shows never took effect
        (reconciliation of a stuck request); a stuck confirm leaves a plain pending payment."""
        operation = payment.pending_operation
        if operation is None:
            return
        self._clear(payment)
        if operation == "capture" and payment.status == S.AUTHORIZED:
            payment.amount_capturable = truth.amount_capturable if truth else payment.amount
        if operation == "cancel" and payment.status == S.AUTHORIZED:
            payment.cancellation_reason = None
        self.note(session, payment, "operation_cleared", actor, reason=reason)
        self.audit.record(
            session,
            actor,
            "payment.operation_cleared",
            "payment",
            payment.id,
            details={"operation": operation, "reason": reason},
        )

    def note(
        self,
        session: AsyncSession,
        payment: Payment,
        kind: str,
        actor: Actor,
        *,
        reason: str | None = None,
        amount: int | None = None,
    ) -> None:
        """Append an entry that is not a status change (refund outcome, dispute change,
        reconciliation fix) to the history."""
        payment.updated_at = self.clock.now()
        self._event(session, payment, kind, None, None, actor, reason=reason, amount=amount)

    async def _notify_confirmed(self, payment: Payment) -> None:
        for listener in self.confirm_listeners:
            try:
                await listener(payment.id)
            except Exception:
                # The reconciler retries whatever a listener could not do.
                log.exception("confirm listener failed")

    def transition(
        self,
        session: AsyncSession,
        payment: Payment,
        target: PaymentStatus,
        actor: Actor,
        *,
        reason: str | None,
        amount: int | None = None,
    ) -> None:
        """The one place a payment's status changes: checked, historied and audited."""
        previous = payment.status
        check_transition(previous, target)
        payment.status = target
        if target != S.REQUIRES_ACTION and payment.next_action is not None:
            payment.next_action = None
        payment.updated_at = self.clock.now()
        self._event(
            session,
            payment,
            "status_changed",
            previous,
            target,
            actor,
            reason=reason,
            amount=amount,
        )
        self.audit.record(
            session,
            actor,
            f"payment.{target}",
            "payment",
            payment.id,
            details={"from": previous, "to": str(target), "reason": reason},
        )

    def _event(
        self,
        session: AsyncSession,
        payment: Payment,
        kind: str,
        previous: str | None,
        target: str | None,
        actor: Actor,
        *,
        reason: str | None = None,
        amount: int | None = None,
    ) -> None:
        PaymentRepository(session).add_event(
            PaymentEvent(
                id=new_id("pev"),
                payment_id=payment.id,
                type=kind,
                from_status=previous,
                to_status=target,
                amount=amount,
                reason=reason,
                actor_id=actor.id,
                created_at=self.clock.now(),
            )
        )

    async def _locked(self, session: AsyncSession, payment_id: str) -> Payment:
        payment = await PaymentRepository(session).get(payment_id, for_update=True)
        if payment is None:
            raise NotFound("No such payment", param="id")
        return payment

    def _take_over(self, payment: Payment, operation: str) -> bool:
        """True when an earlier attempt of the same operation crashed or hung long enough
        ago that this request may resume it (same idempotency key at the gateway)."""
        if payment.pending_operation is None:
            return False
        stale = payment.pending_since is not None and (
            self.clock.now() - payment.pending_since >= STALE_AFTER
        )
        if payment.pending_operation == operation and stale:
            return True
        raise in_progress_error(payment)

    def _mark(self, payment: Payment, operation: str) -> None:
        payment.pending_operation = operation
        payment.pending_since = self.clock.now()
        payment.updated_at = self.clock.now()

    @staticmethod
    def _clear(payment: Payment) -> None:
        payment.pending_operation = None
        payment.pending_since = None

    @staticmethod
    def _remember(payment: Payment, truth: GatewayPayment) -> None:
        payment.gateway_reference = payment.gateway_reference or truth.reference
        if truth.card is not None:
            payment.card_type = truth.card.type
            payment.card_brand = truth.card.brand
            payment.card_last4 = truth.card.last4
            payment.card_exp_month = truth.card.exp_month
            payment.card_exp_year = truth.card.exp_year


def gateway_target(current: str, truth: GatewayPaymentStatus) -> PaymentStatus | None:
    """Where the gateway's truth moves a payment now in `current`; None when it is already
    there or the move would go backwards (out-of-order or stale news)."""
    status = S(current)
    g = GatewayPaymentStatus
    undecided = (S.PENDING, S.REQUIRES_ACTION, S.PROCESSING)
    if truth == g.CAPTURED and status in (*undecided, S.AUTHORIZED):
        return S.CAPTURED
    if truth == g.AUTHORIZED and status in undecided:
        return S.AUTHORIZED
    if truth == g.FAILED and status in undecided:
        return S.FAILED
    if truth == g.CANCELED and status in (S.PENDING, S.REQUIRES_ACTION, S.AUTHORIZED):
        return S.CANCELLED
    if truth == g.CANCELED and status == S.PROCESSING:
        return S.FAILED  # processing may not become cancelled; nothing was taken either way
    if truth == g.PROCESSING and status in (S.PENDING, S.REQUIRES_ACTION):
        return S.PROCESSING
    if truth == g.REQUIRES_ACTION and status == S.PENDING:
        return S.REQUIRES_ACTION
    return None


def operation_resolved(operation: str, status: PaymentStatus) -> bool:
    """Whether a payment now in `status` has the answer an in-flight `operation` awaited."""
    if operation == "confirm":
        return status not in (S.PENDING, S.PROCESSING)
    if operation == "cancel":
        return status not in (S.AUTHORIZED, S.REQUIRES_ACTION)
    return status != S.AUTHORIZED  # capture


def order_already_paid_error() -> StateConflict:
    return StateConflict(
        "This order already has a payment in progress or paid", code="order_already_paid"
    )


def in_progress_error(payment: Payment) -> StateConflict:
    return StateConflict(
        f"A {payment.pending_operation} of this payment is in progress",
        code="operation_in_progress",
    )


def gateway_failure(error: GatewayError) -> PaysvcError:
    if isinstance(error, InvalidPaymentMethod):
        return InvalidRequest(
            "payment_method: not a payment method the gateway knows",
            param="payment_method",
            code="invalid_payment_method",
        )
    if isinstance(error, GatewayRejected):
        return InvalidRequest(f"The gateway rejected the request: {error}", code="gateway_rejected")
    if isinstance(error, GatewayUnavailable):
        return GatewayUnavailableError("The payment gateway is unavailable; try again later")
    return GatewayUnavailableError("The payment gateway failed", http_status=502)
