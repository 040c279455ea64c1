"""Payment use cases. Every gateway call is an operation of the ledger (`paysvc.operations`),
in atomic phases:

1. a write unit of work locks the payment, validates, and inserts the operation;
2. the gateway is called with the operation's id as idempotency key, holding no database lock;
3. a second unit of work settles the operation and projects it onto the payment
   (`settle_operation` -> `project` -> `apply_gateway_state` -> `transition`).

A crash or lost answer between 1 and 3 leaves the operation pending: the completer
(`paysvc.operations.completer`) finishes it by lookup or by re-sending under the same key;
never by charging twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, select
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
from paysvc.events.outbox import PAYMENT_EVENT_TYPES, Outbox
from paysvc.gateways.base import (
    CardDeclined,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
)
from paysvc.gateways.registry import Gateways
from paysvc.idempotency.service import attach_resource
from paysvc.ids import new_id, plausible
from paysvc.logs import payment_id_var
from paysvc.metrics import Metrics
from paysvc.operations.models import Operation
from paysvc.operations.repository import OperationRepository, order_held
from paysvc.operations.service import Call, Ledger, Outcome, classify
from paysvc.operations.states import CONFIRMS, OPEN, OperationStatus, may_move
from paysvc.operations.states import OperationKind as K
from paysvc.operations.states import OperationStatus as OS
from paysvc.orders.validation import OrderValidator
from paysvc.payments.models import Payment, PaymentEvent
from paysvc.payments.repository import PaymentFilter, PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.states import LIVE, REFUNDABLE, PaymentStatus, check_transition

S = PaymentStatus
log = logging.getLogger(__name__)
# Called with a payment id after a confirm settled (e.g. to apply webhooks that came early).
ConfirmListener = Callable[[str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ConfirmFollowUp:
    """Work after a confirm that is rarely needed (a webhook that came early, an order
    cancelled meanwhile). `due(payment)` is a SQL condition (an EXISTS) telling whether there
    is any: every follow-up's is asked in one statement, the last of the confirm's settling
    unit of work; `run` (a ConfirmListener) does it after the commit, only when due. On
    SQLite writers are serialized, so nothing is missed. On PostgreSQL (read committed) a
    writer that commits between that statement and this commit, and itself read the payment
    before this commit, would be missed by both sides: `lock(payment)` (when given) is taken
    in a statement before `due` is asked and held until the commit, and that writer takes the
    same lock before it looks for the payment, so whichever commits first is seen by the
    other. Without one, what is missed is found by the background reconciler (the
    completer's `settle_cancelled`)."""

    due: Callable[[Payment], ColumnElement[bool]]
    run: ConfirmListener
    lock: Callable[[Payment], ColumnElement[Any] | None] | None = None


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
# Settles a refund operation and projects it onto the refund and the payment (set by
# bootstrap to RefundService.project).
RefundProjector = Callable[[AsyncSession, Payment, Operation, Outcome, Actor], Awaitable[None]]


class PaymentService:
    def __init__(
        self,
        db: Database,
        gateways: Gateways,
        clock: Clock,
        audit: AuditLog,
        ledger: Ledger,
        outbox: Outbox,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.db = db
        self.gateways = gateways
        self.clock = clock
        self.audit = audit
        self.ledger = ledger
        self.outbox = outbox  # every state change writes its outgoing event
        self.order_validator: OrderValidator | None = None  # ORDER_VALIDATION=strict
        self.refund_remainder: RefundRemainder | None = None
        self.refund_projector: RefundProjector | None = None
        self.confirm_listeners: list[ConfirmListener] = []  # after every confirm
        self.confirm_followups: list[ConfirmFollowUp] = []  # after a confirm, when due
        self._reader = db.reader(Payment)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, actor: Actor, payment_id: str) -> Payment:
        """The payment as it is now, for reading: one statement outside any unit of work."""
        if not plausible(payment_id):
            raise NotFound("No such payment", param="id")
        return _visible(actor, payment_id, await self._reader.get(payment_id))

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
        return _visible(actor, payment_id, payment)

    # -- create --------------------------------------------------------------------------

    async def create_intent(
        self, actor: Actor, intent: NewIntent, *, authorization: str | None = None
    ) -> Payment:
        """A new `pending` payment. With order validation on, the order service must first
        agree (asked with the caller's `authorization`, holding no transaction)."""
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
        if self.order_validator is not None:
            await self.order_validator.check(
                intent.order_id, customer_id, intent.amount, intent.currency, authorization
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
            self.outbox.record(session, "payment.created", payment, render_payment(payment))
            self._count(session, payment)
            await attach_resource(session, payment.id)
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

        created = await self.db.run(work)
        payment_id_var.set(created.id)
        return created

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
        payment_id_var.set(payment_id)

        async def begin(session: AsyncSession) -> Call | None:
            # Every payment of the order, locked in id order, in one statement: two confirms
            # of one order (different payments) serialize here, so one order is charged at
            # most once.
            if not plausible(payment_id):
                raise NotFound("No such payment", param="id")
            order = await PaymentRepository(session).lock_order_of(payment_id)
            payment = next((p for p in order if p.id == payment_id), None)
            if payment is None:
                raise NotFound("No such payment", param="id")
            actor.require_owner(payment.customer_id, "payment", payment_id)
            if payment.status == S.REQUIRES_ACTION:
                if payment_method is not None or return_url is not None:
                    raise StateConflict(
                        "Cannot confirm a payment that is requires_action with new parameters: "
                        "it awaits the customer's authentication; confirm it again with an "
                        "empty body to learn the outcome, or cancel it"
                    )
                return None
            # The operations of the whole order, in one statement (read under its lock).
            order_ops = await OperationRepository(session).for_payments([p.id for p in order])
            own = [o for o in order_ops if o.payment_id == payment.id]
            _no_open_operation_in(own)
            if payment.status != S.PENDING:
                raise StateConflict(f"Cannot confirm a payment that is {payment.status}")
            method = payment_method or payment.payment_method
            if not method:
                raise InvalidRequest("payment_method: required", param="payment_method")
            if order_held(order, order_ops, other_than=payment.id):
                raise order_already_paid_error()
            payment.payment_method = method
            payment.return_url = return_url
            payment.updated_at = self.clock.now()
            kind = K.AUTHORIZE if payment.capture_method == "manual" else K.CHARGE
            op = self.ledger.open(session, payment, kind, payment.amount)
            await attach_resource(session, op.id)
            earlier = frozenset(o.gateway_reference for o in own if o.gateway_reference)
            return self.ledger.call_for(payment, op, other_references=earlier)

        call = await self.db.run(begin)
        if call is None:
            return await self.settle_action(actor, payment_id, raise_decline=True)
        outcome = await self.ledger.send(call)

        async def settle(session: AsyncSession) -> tuple[Payment, Sequence[ConfirmListener]]:
            payment, _ = await self.settle_operation(
                session,
                call.operation_id,
                outcome,
                actor,
                reason="confirmed",
                payment_id=call.payment_id,
            )
            return payment, await self._due_followups(session, payment)

        payment, due = await self.db.run(settle)
        await self._notify_confirmed(payment, due)
        if isinstance(outcome, CardDeclined):
            raise CardError(
                outcome.decline.message,
                code=outcome.decline.code,
                extra={
                    "decline_code": outcome.decline.decline_code,
                    "payment": render_payment(payment),
                },
            )
        if isinstance(outcome, GatewayError) and not isinstance(outcome, OutcomeUnknown):
            raise gateway_failure(outcome)
        return payment

    async def settle_action(
        self, actor: Actor, payment_id: str, *, raise_decline: bool = False
    ) -> Payment:
        """Ask the gateway how a `requires_action` payment's authentication ended and settle
        its charge operation (and so the payment) with the answer. Never charges. Used by the
        owner's empty re-confirm and by the sandbox's authentication page; with
        `raise_decline`, a failed authentication raises the 402 card error with the payment."""

        async def read(session: AsyncSession) -> Payment | Call:
            payment = await self.load(session, actor, payment_id)
            if payment.status != S.REQUIRES_ACTION:
                return payment
            op = await self._awaiting_customer(OperationRepository(session), payment)
            return payment if op is None else self.ledger.call_for(payment, op)

        begun = await self.db.run(read, write=False)
        if isinstance(begun, Call):
            try:
                found = await self.ledger.lookup(begun)
            except GatewayError as error:
                raise gateway_failure(error) from None
            payment = await self.get(actor, payment_id)
            if found is not None:
                payment, _ = await self.db.run(
                    lambda session: self.settle_operation(
                        session, begun.operation_id, found, actor, reason="authentication settled"
                    )
                )
        else:
            payment = begun
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

    @staticmethod
    async def _awaiting_customer(ops: OperationRepository, payment: Payment) -> Operation | None:
        """The payment's charge operation that waits for the customer (3-D Secure), if any."""
        for op in await ops.open_for_payment(payment.id):
            if op.kind in CONFIRMS and op.status == OS.REQUIRES_ACTION:
                return op
        return None

    # -- capture -------------------------------------------------------------------------

    async def capture(self, actor: Actor, payment_id: str, amount: int | None) -> Payment:
        payment_id_var.set(payment_id)
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may capture payments")

        async def begin(session: AsyncSession) -> Call:
            payment = await self.load(session, actor, payment_id, for_update=True)
            await self._no_open_operation(OperationRepository(session), payment)
            if payment.status != S.AUTHORIZED:
                raise StateConflict(f"Cannot capture a payment that is {payment.status}")
            to_capture = payment.amount_capturable if amount is None else amount
            if to_capture > payment.amount_capturable:
                raise InvalidRequest(
                    f"amount_to_capture: at most {payment.amount_capturable} is capturable",
                    param="amount_to_capture",
                    code="amount_exceeds_capturable",
                )
            op = self.ledger.open(session, payment, K.CAPTURE, to_capture)
            await attach_resource(session, op.id)
            return self.ledger.call_for(payment, op)

        return await self._run_operation(actor, await self.db.run(begin), reason="captured")

    # -- cancel --------------------------------------------------------------------------

    async def cancel(
        self, actor: Actor, payment_id: str, reason: str | None, refund_if_captured: bool = False
    ) -> Payment:
        payment_id_var.set(payment_id)
        if refund_if_captured and not actor.is_staff:
            raise PermissionDenied(
                "refund_if_captured is for service or admin callers", param="refund_if_captured"
            )

        refund_instead = False

        async def begin(session: AsyncSession) -> Payment | Call:
            nonlocal refund_instead
            payment = await self.load(session, actor, payment_id, for_update=True)
            await self._no_open_operation(OperationRepository(session), payment)
            if refund_if_captured and payment.status in REFUNDABLE and self.refund_remainder:
                refund_instead = True
                return payment
            if payment.status == S.PENDING:
                payment.cancellation_reason = reason
                self.transition(session, payment, S.CANCELLED, actor, reason=reason or "cancelled")
                await attach_resource(session, payment.id)
                return payment
            if payment.status not in (S.AUTHORIZED, S.REQUIRES_ACTION):
                raise StateConflict(f"Cannot cancel a payment that is {payment.status}")
            payment.cancellation_reason = reason
            op = self.ledger.open(session, payment, K.VOID, payment.amount_capturable)
            await attach_resource(session, op.id)
            return self.ledger.call_for(payment, op)

        started = await self.db.run(begin)
        if refund_instead and self.refund_remainder is not None:
            # Outside the unit of work above: the refund runs its own atomic phases.
            return await self.refund_remainder(actor, payment_id, reason)
        if isinstance(started, Payment):
            return started
        try:
            return await self._run_operation(actor, started, reason=reason or "cancelled")
        except InvalidRequest:  # the gateway refused the void
            # E.g. the customer finished authenticating meanwhile: record what it is.
            settled = await self.settle_action(actor, payment_id)
            if settled.status == S.REQUIRES_ACTION:
                raise
            raise StateConflict(
                f"The payment became {settled.status} before it could be cancelled"
            ) from None

    async def abandon(self, actor: Actor, payment_id: str) -> Payment:
        """The customer never finished authenticating (the completer, after a day): void the
        gateway's intent and release the order. A `requires_action` payment ends `cancelled`
        (reason `abandoned`); one still `processing` (its confirm's answer was lost, so the
        customer never saw the page) ends `failed`. Nothing to do once the charge settled."""

        async def begin(session: AsyncSession) -> Call | None:
            payment = await self._locked(session, payment_id)
            ops = OperationRepository(session)
            charge = await self._awaiting_customer(ops, payment)
            if charge is None or payment.status not in (S.REQUIRES_ACTION, S.PROCESSING):
                return None  # settled meanwhile
            await self._no_open_operation(ops, payment)
            payment.gateway_reference = payment.gateway_reference or charge.gateway_reference
            if payment.status == S.REQUIRES_ACTION:
                payment.cancellation_reason = "abandoned"
            op = self.ledger.open(session, payment, K.VOID, 0)
            return self.ledger.call_for(payment, op)

        call = await self.db.run(begin)
        if call is None:
            return await self.get(actor, payment_id)
        return await self._run_operation(actor, call, reason="abandoned")

    # -- shared machinery ----------------------------------------------------------------

    async def _run_operation(self, actor: Actor, call: Call, *, reason: str) -> Payment:
        """Phases 2 and 3 of capture and void: call the gateway, then record what it said."""
        outcome = await self.ledger.send(call)
        payment, _ = await self.db.run(
            lambda session: self.settle_operation(
                session,
                call.operation_id,
                outcome,
                actor,
                reason=reason,
                payment_id=call.payment_id,
            )
        )
        if isinstance(outcome, OutcomeUnknown):
            raise GatewayUnavailableError(
                f"The gateway did not answer the {call.kind}; it will be completed",
                code="gateway_outcome_unknown",
                http_status=502,
            )
        if isinstance(outcome, GatewayError):
            raise gateway_failure(outcome)
        return payment

    async def _no_open_operation(self, ops: OperationRepository, payment: Payment) -> None:
        _no_open_operation_in(await ops.open_for_payment(payment.id))

    async def settle_operation(
        self,
        session: AsyncSession,
        op_id: str,
        outcome: Outcome,
        actor: Actor,
        *,
        reason: str,
        payment_id: str | None = None,
    ) -> tuple[Payment, Operation]:
        """Phase 3, for an answer from the call itself or from the completer: lock the
        payment, then (one statement) its open operations and this one, settle the operation
        and project it. `payment_id` (the caller's Call knows it) saves reading the
        operation first."""
        ops = OperationRepository(session)
        if payment_id is None:
            found = await ops.get(op_id)
            if found is None:
                raise NotFound("No such operation", param="id")
            payment_id = found.payment_id
        payment = await self._locked(session, payment_id)
        locked = await ops.lock_open_and(payment_id, op_id)
        op = next((o for o in locked if o.id == op_id), None)
        if op is None:
            raise NotFound("No such operation", param="id")
        await self.project(session, payment, op, outcome, actor, reason=reason, open_ops=locked)
        return payment, op

    async def project(
        self,
        session: AsyncSession,
        payment: Payment,
        op: Operation,
        outcome: Outcome,
        actor: Actor,
        *,
        reason: str,
        open_ops: Sequence[Operation] | None = None,
    ) -> None:
        """THE projection: settle `op` with the gateway's answer and move the payment (and
        refund) forward to it. A definitive answer is always applied, whenever it arrives;
        an answer that decides nothing leaves the operation pending for the completer.
        `open_ops`: the payment's open operations, when the caller has them locked."""
        if op.kind == K.REFUND:
            assert self.refund_projector is not None  # set by bootstrap
            await self.refund_projector(session, payment, op, outcome, actor)
            return
        target = classify(op.kind, outcome)
        if (
            target == OS.FAILED
            and op.attempts > 1
            and isinstance(outcome, GatewayError)
            and not isinstance(outcome, CardDeclined)
        ):
            target = OS.PENDING  # this re-send did nothing; an earlier attempt still may have
        if isinstance(outcome, GatewayPayment):
            if op.kind in CONFIRMS and op.status in OPEN and outcome.gateway:
                op.gateway = payment.gateway = outcome.gateway  # who took (or may hold) it
            op.gateway_reference = op.gateway_reference or outcome.reference
            await self.apply_gateway_state(
                session, payment, outcome, actor, reason=reason, open_ops=open_ops
            )
        elif isinstance(outcome, CardDeclined) and op.kind in CONFIRMS:
            if outcome.payment is not None:
                op.gateway_reference = op.gateway_reference or outcome.payment.reference
                self._remember(payment, outcome.payment)
            if payment.status in (S.PENDING, S.REQUIRES_ACTION, S.PROCESSING):
                payment.failure_code = outcome.decline.code
                payment.failure_decline_code = outcome.decline.decline_code
                payment.failure_message = outcome.decline.message
                self.transition(session, payment, S.FAILED, actor, reason=outcome.decline.code)
        elif isinstance(outcome, GatewayError) and outcome.gateway and op.kind in CONFIRMS:
            if op.status in OPEN:
                op.gateway = payment.gateway = outcome.gateway
        if isinstance(outcome, GatewayError):
            op.last_error = str(outcome)[:500] or type(outcome).__name__
            op.updated_at = self.clock.now()
        if target == OS.PENDING:
            if isinstance(outcome, OutcomeUnknown) and op.status == OS.PENDING:
                op.next_check_at = self.clock.now()  # nobody waits for it: look it up now
            if op.kind in CONFIRMS and payment.status == S.PENDING and op.status in OPEN:
                self.transition(
                    session, payment, S.PROCESSING, actor, reason="gateway outcome unknown"
                )
            return
        if op.kind == K.VOID and target == OS.FAILED and payment.status in LIVE:
            payment.cancellation_reason = None  # the void did not happen
        self.settle_op(op, target)

    def settle_op(self, op: Operation, target: OperationStatus) -> None:
        """Settle an operation, unless a contradicting answer came after a definitive one
        (a gateway anomaly: logged, the first answer kept)."""
        if op.status == target:
            return
        if not may_move(op.kind, op.status, target):
            log.warning(
                "operation %s is %s; the gateway now says %s: kept, check manually",
                op.id,
                op.status,
                target,
            )
            return
        self.ledger.move(op, target)

    async def apply_gateway_state(
        self,
        session: AsyncSession,
        payment: Payment,
        truth: GatewayPayment,
        actor: Actor,
        *,
        reason: str,
        open_ops: Sequence[Operation] | None = None,
    ) -> bool:
        """Move the payment forward to what the gateway reports (never backwards), and settle
        the open operations this answers (`open_ops`: the payment's open operations, when the
        caller read them under its lock; else they are read here). Returns True when the
        payment changed. Used by the projection, reconciliation and webhooks alike."""
        ops = OperationRepository(session)
        if (
            truth.next_action is not None
            and truth.status == GatewayPaymentStatus.REQUIRES_ACTION
            and payment.status in (S.PENDING, S.REQUIRES_ACTION)
        ):
            payment.next_action = truth.next_action.as_dict()
        target = gateway_target(payment.status, truth.status)
        if target in LIVE and payment.status not in LIVE:
            # About the order's other payments only: nothing of this unit of work to flush.
            with session.no_autoflush:
                held = await ops.order_is_held(payment.order_id, other_than=payment.id)
        else:
            held = False
        if held:
            # The gateway took money for an order another payment already holds: the
            # operation records it; reconciliation reports it (order_charged_twice).
            log.warning(
                "payment %s: the gateway reports %s, but its order is held by another "
                "payment; reported as order_charged_twice",
                payment.id,
                truth.status,
            )
            self.note(session, payment, "order_charged_twice", actor, reason=truth.reference)
            payment.gateway_reference = payment.gateway_reference or truth.reference
            target = None
        changed = target is not None and self._move_to(
            session, payment, truth, target, actor, reason
        )
        if open_ops is None:
            open_ops = await ops.open_for_payment(payment.id)
        for op in open_ops:
            if op.kind == K.REFUND or op.status not in OPEN:
                continue
            if op.kind in CONFIRMS and op.gateway_reference not in (None, truth.reference):
                continue
            settled = classify(op.kind, truth)
            if settled != OS.PENDING:
                op.gateway_reference = op.gateway_reference or truth.reference
                self.settle_op(op, settled)
            elif (
                op.status == OS.REQUIRES_ACTION and truth.status == GatewayPaymentStatus.PROCESSING
            ):
                # Authenticated; the gateway is still deciding: an ordinary pending operation.
                self.settle_op(op, OS.PENDING)
                op.next_check_at = self.clock.now() + self.ledger.timing.operation_stale
        return changed

    def _move_to(
        self,
        session: AsyncSession,
        payment: Payment,
        truth: GatewayPayment,
        target: PaymentStatus,
        actor: Actor,
        reason: str,
    ) -> bool:
        self._remember(payment, truth)
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
        return True

    async def operations(self, actor: Actor, payment_id: str) -> Sequence[Operation]:
        """A payment's operations, oldest first (admins: `GET /admin/payments/{id}/operations`;
        operators: `paysvc payments show`)."""
        if actor.role != Role.ADMIN:
            raise PermissionDenied("Admin only")

        async def work(session: AsyncSession) -> Sequence[Operation]:
            await self.load(session, actor, payment_id)
            return await OperationRepository(session).for_payment(payment_id)

        return await self.db.run(work, write=False)

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

    async def _due_followups(
        self, session: AsyncSession, payment: Payment
    ) -> Sequence[ConfirmListener]:
        """The follow-ups due after this confirm, asked in one statement (after the writes:
        it flushes them first)."""
        if not self.confirm_followups:
            return []
        if not self.db.is_sqlite:
            locks = [
                lock
                for f in self.confirm_followups
                if f.lock is not None and (lock := f.lock(payment)) is not None
            ]
            if locks:
                await session.execute(select(*locks))
        due = await session.execute(select(*(f.due(payment) for f in self.confirm_followups)))
        return [f.run for f, now in zip(self.confirm_followups, due.one(), strict=True) if now]

    async def _notify_confirmed(self, payment: Payment, due: Sequence[ConfirmListener]) -> None:
        for listener in (*self.confirm_listeners, *due):
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
        """The one place a payment's status changes: checked, historied, audited, and
        announced (the outgoing event, in the same transaction)."""
        previous = payment.status
        check_transition(previous, target)
        payment.status = target
        if target != S.REQUIRES_ACTION and payment.next_action is not None:
            payment.next_action = None
        payment.updated_at = self.clock.now()
        self._count(session, payment)
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
        self.outbox.record(session, PAYMENT_EVENT_TYPES[target], payment, render_payment(payment))

    def _count(self, session: AsyncSession, payment: Payment) -> None:
        self.metrics.payment_reached(
            session, payment.status, payment.gateway, payment.currency, payment.amount
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


def _no_open_operation_in(ops: Iterable[Operation]) -> None:
    """409 while a capture, void or confirm of the payment is at the gateway. A charge
    waiting for the customer (3-D Secure) is not in progress: the payment's status says what
    may follow."""
    for op in ops:
        if op.status in OPEN and op.kind != K.REFUND and op.status != OS.REQUIRES_ACTION:
            raise in_progress_error(op.kind)


def order_already_paid_error() -> StateConflict:
    return StateConflict(
        "This order already has a payment in progress or paid", code="order_already_paid"
    )


def in_progress_error(kind: str) -> StateConflict:
    return StateConflict(f"A {kind} of this payment is in progress", code="operation_in_progress")


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


def _visible(actor: Actor, payment_id: str, payment: Payment | None) -> Payment:
    """The payment if the actor may see it; a stranger's payment is simply not found."""
    if payment is None:
        raise NotFound("No such payment", param="id")
    actor.require_owner(payment.customer_id, "payment", payment_id)
    return payment
