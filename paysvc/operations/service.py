"""The ledger's three phases, for every gateway call that moves money:

1. `open` inserts the operation in the caller's unit of work, the one that locked the payment
   and validated the request;
2. `send` calls the gateway holding no lock, with the operation's id as idempotency key, on
   every attempt (the first and every re-send by the completer);
3. the outcome (`classify`) settles the operation through `move` and is projected onto the
   payment/refund by `PaymentService.settle_operation` (the projection).

What phase 2 needs is captured in a `Call` at the end of phase 1 (or by the completer), so no
row is read outside a unit of work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.clock import Clock, as_utc
from paysvc.config import Timing
from paysvc.gateways.base import (
    ChargeRequest,
    Gateway,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.gateways.registry import Gateways
from paysvc.ids import new_id
from paysvc.operations.models import Operation
from paysvc.operations.repository import OperationRepository
from paysvc.operations.states import OperationKind, OperationStatus, check_transition
from paysvc.payments.models import Payment

K = OperationKind
OS = OperationStatus
G = GatewayPaymentStatus
log = logging.getLogger(__name__)
# What the gateway said: a payment, a refund, an error, or None (it has no record).
Outcome = GatewayPayment | GatewayRefund | GatewayError | None


@dataclass(frozen=True, slots=True)
class Call:
    """Everything phase 2 (and a lookup) needs, read in a unit of work."""

    operation_id: str
    kind: OperationKind
    gateway: str
    attempts: int
    payment_id: str
    order_id: str
    amount: int
    currency: str
    capture_method: str
    payment_method: str | None
    reference: str | None  # the payment's gateway reference (capture, void, refund)
    refund_id: str | None
    reason: str | None
    operation_reference: str | None = None  # the gateway's id of the operation, once known
    # Where the customer returns after 3-D Secure: part of a charge's parameters, so every
    # attempt under the operation's key sends the same request.
    return_url: str | None = None
    # References of the payment's other operations: a lookup that finds one of these has not
    # found this operation.
    other_references: frozenset[str] = frozenset()


def classify(kind: str, outcome: Outcome) -> OperationStatus:
    """The operation's status after this answer (pending: not decided, ask again later)."""
    if outcome is None or isinstance(outcome, OutcomeUnknown):
        return OS.PENDING
    if isinstance(outcome, GatewayError):
        return OS.FAILED  # declined, rejected, unavailable: nothing moved
    if isinstance(outcome, GatewayRefund):
        return {
            GatewayRefundStatus.SUCCEEDED: OS.SUCCEEDED,
            GatewayRefundStatus.FAILED: OS.FAILED,
        }.get(outcome.status, OS.PENDING)
    status = outcome.status
    if kind in (K.CHARGE, K.AUTHORIZE):
        if status in (G.CAPTURED, G.AUTHORIZED):
            return OS.SUCCEEDED
        if status == G.REQUIRES_ACTION:
            return OS.REQUIRES_ACTION  # decided by the customer (3-D Secure), then the gateway
        return OS.FAILED if status in (G.FAILED, G.CANCELED) else OS.PENDING
    if kind == K.CAPTURE:
        if status == G.CAPTURED:
            return OS.SUCCEEDED
        return OS.FAILED if status in (G.CANCELED, G.FAILED) else OS.PENDING
    if kind == K.VOID:
        if status in (G.CANCELED, G.FAILED):
            return OS.SUCCEEDED
        return OS.FAILED if status == G.CAPTURED else OS.PENDING
    return OS.PENDING


# An operation that waits for the customer (3-D Secure): checked every ACTION_CHECK_FIRST at
# first, backing off to ACTION_CHECK_MAX; abandoned (the payment cancelled) after a day.
ACTION_CHECK_FIRST = dt.timedelta(seconds=10)
ACTION_CHECK_MAX = dt.timedelta(minutes=30)
ACTION_ABANDONED_AFTER = dt.timedelta(hours=24)


class Ledger:
    def __init__(self, gateways: Gateways, clock: Clock, timing: Timing) -> None:
        self.gateways = gateways
        self.clock = clock
        self.timing = timing

    # -- phase 1 -------------------------------------------------------------------------

    def open(
        self,
        session: AsyncSession,
        payment: Payment,
        kind: OperationKind,
        amount: int,
        *,
        refund_id: str | None = None,
    ) -> Operation:
        """Insert the operation (in the unit of work that locked `payment`); attempt 1 is
        handed to the gateway right after this unit of work commits."""
        now = self.clock.now()
        op = Operation(
            id=new_id("op"),
            payment_id=payment.id,
            kind=kind,
            amount=amount,
            currency=payment.currency,
            status=OS.PENDING,
            attempts=1,
            gateway=payment.gateway,
            gateway_reference=None,
            refund_id=refund_id,
            last_error=None,
            next_check_at=now + self.timing.operation_stale,
            created_at=now,
            updated_at=now,
        )
        OperationRepository(session).add(op)
        return op

    @staticmethod
    def call_for(
        payment: Payment,
        op: Operation,
        *,
        reason: str | None = None,
        other_references: frozenset[str] = frozenset(),
    ) -> Call:
        return Call(
            operation_id=op.id,
            kind=OperationKind(op.kind),
            gateway=op.gateway,
            attempts=op.attempts,
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=op.amount,
            currency=op.currency,
            capture_method=payment.capture_method,
            payment_method=payment.payment_method,
            reference=payment.gateway_reference,
            refund_id=op.refund_id,
            reason=reason,
            operation_reference=op.gateway_reference,
            return_url=payment.return_url,
            other_references=other_references,
        )

    # -- phase 2 -------------------------------------------------------------------------

    async def send(self, call: Call) -> Outcome:
        """Hand the operation to its gateway under its own key, within the gateway deadline.
        Never raises: anything that is not an answer is an unknown outcome."""
        try:
            async with asyncio.timeout(self.timing.gateway_timeout.total_seconds()):
                return await self._send(call)
        except GatewayError as error:
            return error
        except TimeoutError:
            return OutcomeUnknown(f"no answer to {call.operation_id} within the gateway timeout")
        except Exception:  # anything unexpected: the call may have taken effect
            log.exception("unexpected error while sending %s", call.operation_id)
            return OutcomeUnknown(f"unexpected error while sending {call.operation_id}")

    async def _send(self, call: Call) -> GatewayPayment | GatewayRefund:
        key = call.operation_id
        if call.kind in (K.CHARGE, K.AUTHORIZE):
            assert call.payment_method is not None  # phase 1 requires one
            request = ChargeRequest(
                payment_id=call.payment_id,
                order_id=call.order_id,
                amount=call.amount,
                currency=call.currency,
                capture_method="manual" if call.kind == K.AUTHORIZE else "automatic",
                payment_method=call.payment_method,
                idempotency_key=key,
                return_url=call.return_url,
            )
            # The first attempt may fail over; a re-send goes where the first one went.
            gateway = self.gateways.primary if call.attempts <= 1 else self._owner(call)
            return await gateway.charge(request)
        assert call.reference is not None  # capture, void and refund need the gateway's id
        gateway = self._owner(call)
        if call.kind == K.CAPTURE:
            return await gateway.capture(call.reference, call.amount, key)
        if call.kind == K.VOID:
            return await gateway.cancel(call.reference, key)
        assert call.refund_id is not None
        return await gateway.refund(
            RefundRequest(
                refund_id=call.refund_id,
                payment_reference=call.reference,
                amount=call.amount,
                currency=call.currency,
                reason=call.reason,
                idempotency_key=key,
            )
        )

    async def lookup(self, call: Call) -> Outcome:
        """What the gateway knows about the operation (None: nothing). Raises GatewayError
        when it cannot be asked."""
        if call.kind in (K.CHARGE, K.AUTHORIZE):
            if call.operation_reference is not None:  # e.g. waiting for 3-D Secure
                return await self._owner(call).retrieve_payment(call.operation_reference)
            found = await self.gateways.primary.find_payment(call.payment_id)
            if found is None or found.reference in call.other_references:
                return None
            return found
        gateway = self._owner(call)
        if call.kind == K.REFUND:
            if call.operation_reference is not None:
                return await gateway.retrieve_refund(call.operation_reference)
            assert call.refund_id is not None
            return await gateway.find_refund(call.refund_id)
        if call.reference is None:
            return None
        return await gateway.retrieve_payment(call.reference)

    def _owner(self, call: Call) -> Gateway:
        return self.gateways.for_payment(call.gateway)

    # -- phase 3 helpers -----------------------------------------------------------------

    def move(self, op: Operation, target: OperationStatus, *, error: str | None = None) -> bool:
        """The one place an operation's status changes. False when it is already there."""
        if op.status == target:
            return False
        check_transition(op.kind, op.status, target)
        op.status = target
        if error is not None:
            op.last_error = error[:500]
        if target == OS.REQUIRES_ACTION:
            op.next_check_at = self.clock.now() + self.action_check_delay(op)
        elif target != OS.PENDING:
            op.next_check_at = None
        op.updated_at = self.clock.now()
        return True

    def action_check_delay(self, op: Operation) -> dt.timedelta:
        """How long the completer waits before asking again about an operation that waits
        for the customer (3-D Secure): often at first (the customer is at the bank's page
        now), then less and less (a fifth of its age: 10 s at first, a minute after five
        minutes, 30 minutes at most)."""
        age = self.clock.now() - as_utc(op.created_at)
        return min(max(age / 5, ACTION_CHECK_FIRST), ACTION_CHECK_MAX)

    def abandoned(self, op: Operation) -> bool:
        """The customer never finished authenticating: give the payment up (cancel it)."""
        return self.clock.now() - as_utc(op.created_at) >= ACTION_ABANDONED_AFTER

    def window(self, gateway: str) -> dt.timedelta:
        """How long the gateway honours an idempotency key (a property of its adapter)."""
        return self.gateways.for_payment(gateway).idempotency_window

    def past_window(self, op: Operation) -> bool:
        return self.clock.now() - as_utc(op.created_at) >= self.window(op.gateway)
