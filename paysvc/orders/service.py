"""Order cancellation: `POST /orders/{order_id}/cancel` settles every payment of the order.

The cancellation is recorded first (one row per order, so a second call changes nothing
more), then each payment goes through the payment and refund services: `pending` is
cancelled, `authorized` voided, `captured`/`partially_refunded` refunded in full. A payment
that cannot be settled now (`processing`, or any gateway operation still open; the gateway
down; a confirm racing the cancellation) is settled later by `settle_cancelled`, which runs
after every applying pass of the completer (background, `paysvc reconcile --apply`) and after
every confirm: once a payment of a cancelled order holds money whose fate is known, its
authorization is voided or its capture refunded (new operations of the ledger).

A refund the gateway refused is not retried automatically (it would fail again, forever):
it stays `failed`, and the payment is logged for a human.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.errors import InvalidRequest, PaysvcError, PermissionDenied
from paysvc.orders.models import OrderCancellation
from paysvc.orders.repository import OrderRepository
from paysvc.payments.models import Payment
from paysvc.payments.service import PaymentService
from paysvc.payments.states import REFUNDABLE, PaymentStatus
from paysvc.refunds.models import Refund
from paysvc.refunds.service import RefundService

S = PaymentStatus
log = logging.getLogger(__name__)
SWEEP_BATCH = 100
MAX_ORDER_ID = 64


@dataclass(frozen=True, slots=True)
class CancelledOrder:
    order_id: str
    payments: list[Payment]
    refunds: list[Refund]


class OrderService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        audit: AuditLog,
        payments: PaymentService,
        refunds: RefundService,
    ) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.payments = payments
        self.refunds = refunds

    async def cancel(self, actor: Actor, order_id: str, reason: str | None) -> CancelledOrder:
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may cancel orders")
        if not 1 <= len(order_id) <= MAX_ORDER_ID:
            raise InvalidRequest(f"order_id: 1 to {MAX_ORDER_ID} characters", param="order_id")

        async def mark(session: AsyncSession) -> OrderCancellation:
            repo = OrderRepository(session)
            found = await repo.cancellation(order_id)
            if found is not None:
                return found
            found = OrderCancellation(
                order_id=order_id, reason=reason, actor_id=actor.id, created_at=self.clock.now()
            )
            repo.add(found)
            await session.flush()
            self.audit.record(
                session, actor, "order.cancel", "order", order_id, details={"reason": reason}
            )
            return found

        try:
            cancellation = await self.db.run(mark)
        except IntegrityError:  # cancelled by a concurrent call: theirs stands
            cancellation = await self.db.run(mark)

        async def read_payments(session: AsyncSession) -> list[Payment]:
            return list(await OrderRepository(session).payments(order_id))

        for payment in await self.db.run(read_payments, write=False):
            await self._settle(actor, payment.id, cancellation)
        return await self.snapshot(order_id)

    async def snapshot(self, order_id: str) -> CancelledOrder:
        async def work(session: AsyncSession) -> CancelledOrder:
            repo = OrderRepository(session)
            payments = list(await repo.payments(order_id))
            refunds = list(await repo.refunds([p.id for p in payments]))
            return CancelledOrder(order_id, payments, refunds)

        return await self.db.run(work, write=False)

    async def settle_cancelled(self, actor: Actor = SYSTEM) -> int:
        """The completer's part: settle payments of cancelled orders whose outcome became
        known since (a processing payment settled, a confirm raced the cancellation, the
        gateway was down). Returns how many were looked at."""

        async def work(session: AsyncSession) -> list[tuple[str, OrderCancellation]]:
            repo = OrderRepository(session)
            found = []
            for payment_id, _at in await repo.unsettled(limit=SWEEP_BATCH):
                payment = await self.payments.load(session, actor, payment_id)
                cancellation = await repo.cancellation(payment.order_id)
                assert cancellation is not None  # joined above; never deleted
                found.append((payment_id, cancellation))
            return found

        due = await self.db.run(work, write=False)
        for payment_id, cancellation in due:
            await self._settle(actor, payment_id, cancellation)
        return len(due)

    @staticmethod
    def cancelled(payment: Payment) -> ColumnElement[bool]:
        """Whether the payment's order is cancelled (a condition asked by a confirm's unit
        of work, which then calls `settle_payment` only if so)."""
        return OrderRepository.cancelled(payment.order_id)

    async def settle_payment(self, payment_id: str) -> None:
        """After a confirm: a payment of a cancelled order is released again at once."""

        async def work(session: AsyncSession) -> OrderCancellation | None:
            payment = await self.payments.load(session, SYSTEM, payment_id)
            return await OrderRepository(session).cancellation(payment.order_id)

        cancellation = await self.db.run(work, write=False)
        if cancellation is not None:
            await self._settle(SYSTEM, payment_id, cancellation)

    async def _settle(self, actor: Actor, payment_id: str, cancellation: OrderCancellation) -> None:
        """One payment of a cancelled order, through the payment and refund services. What
        cannot be done now is logged and left for `settle_cancelled`."""

        async def read(session: AsyncSession) -> tuple[Payment, bool]:
            payment = await self.payments.load(session, actor, payment_id)
            return payment, await OrderRepository(session).has_open_operation(payment_id)

        payment, in_flight = await self.db.run(read, write=False)
        if in_flight:
            return  # an operation open: settled after the completer learns its outcome
        reason = cancellation.reason
        try:
            if payment.status in (S.PENDING, S.AUTHORIZED, "requires_action"):
                await self.payments.cancel(actor, payment_id, reason)
            elif payment.status in REFUNDABLE:
                if await self._refund_refused(payment_id, cancellation):
                    return
                await self.refunds.refund_remainder(actor, payment_id, reason)
        except PaysvcError as error:
            log.warning(
                "payment %s of cancelled order %s not settled yet: %s (%s)",
                payment_id,
                cancellation.order_id,
                error.code,
                error.message,
            )

    async def _refund_refused(self, payment_id: str, cancellation: OrderCancellation) -> bool:
        async def work(session: AsyncSession) -> bool:
            return await OrderRepository(session).refund_failed_since(
                payment_id, cancellation.created_at
            )

        refused = await self.db.run(work, write=False)
        if refused:
            log.warning(
                "payment %s of cancelled order %s: the gateway refused its refund; "
                "not retried automatically, refund it by hand",
                payment_id,
                cancellation.order_id,
            )
        return refused
