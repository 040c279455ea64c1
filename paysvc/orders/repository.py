"""All SQL about order cancellations and the payments and refunds of an order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Exists, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.operations.models import Operation
from paysvc.operations.states import OPEN, OperationKind
from paysvc.orders.models import OrderCancellation
from paysvc.payments.models import Payment
from paysvc.refunds.models import Refund

# Statuses in which a payment of a cancelled order still has money to release or give back.
UNSETTLED = ("pending", "requires_action", "authorized", "captured", "partially_refunded")


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def cancellation(self, order_id: str) -> OrderCancellation | None:
        return await self.session.get(OrderCancellation, order_id)

    @staticmethod
    def cancelled(order_id: str) -> ColumnElement[bool]:
        """A condition: the order is cancelled."""
        return exists().where(OrderCancellation.order_id == order_id)

    def add(self, cancellation: OrderCancellation) -> None:
        self.session.add(cancellation)

    async def payments(self, order_id: str) -> Sequence[Payment]:
        query = (
            select(Payment)
            .where(Payment.order_id == order_id)
            .order_by(Payment.created_at, Payment.id)
            .execution_options(populate_existing=True)
        )
        return list(await self.session.scalars(query))

    async def refunds(self, payment_ids: Sequence[str]) -> Sequence[Refund]:
        query = (
            select(Refund)
            .where(Refund.payment_id.in_(payment_ids))
            .order_by(Refund.created_at, Refund.id)
        )
        return list(await self.session.scalars(query))

    async def unsettled(self, *, limit: int) -> Sequence[tuple[str, dt.datetime]]:
        """Payments of cancelled orders that may still hold money, no operation open:
        (payment id, when the order was cancelled)."""
        query = (
            select(Payment.id, OrderCancellation.created_at)
            .join(OrderCancellation, OrderCancellation.order_id == Payment.order_id)
            .where(Payment.status.in_(UNSETTLED), ~_open_operation(Payment.id))
            .order_by(Payment.created_at, Payment.id)
            .limit(limit)
        )
        return list((await self.session.execute(query)).tuples())

    async def has_open_operation(self, payment_id: str) -> bool:
        found = await self.session.scalar(select(_open_operation(payment_id)))
        return bool(found)

    async def refund_failed_since(self, payment_id: str, since: dt.datetime) -> bool:
        query = select(Refund.id).where(
            Refund.payment_id == payment_id,
            Refund.status == "failed",
            Refund.created_at >= since,
        )
        return (await self.session.scalars(query.limit(1))).first() is not None


def _open_operation(payment_id: Any) -> Exists:
    """The payment has a confirm, capture or void whose outcome is not known yet (an open
    refund does not stop another: what is refundable already counts it)."""
    return (
        select(Operation.id)
        .where(
            Operation.payment_id == payment_id,
            Operation.status.in_(sorted(OPEN)),
            Operation.kind != OperationKind.REFUND,
        )
        .exists()
    )
