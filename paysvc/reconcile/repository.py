"""All SQL reconciliation needs: which payments and refunds to compare with the gateway."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from paysvc.operations.models import Operation
from paysvc.operations.states import OPEN
from paysvc.payments.models import Payment
from paysvc.payments.states import LIVE, PaymentStatus
from paysvc.refunds.models import Refund
from paysvc.refunds.states import RefundStatus

# The payment has an operation the completer has not finished (pending, unknown, ...).
_BUSY = (
    select(Operation.id)
    .where(Operation.payment_id == Payment.id, Operation.status.in_(sorted(OPEN)))
    .exists()
)


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """The columns reconciliation compares (no encrypted fields are read)."""

    id: str
    status: str
    gateway: str
    gateway_reference: str | None
    busy: bool  # an operation is open: the completer settles it, not the comparison
    amount_captured: int
    created_at: dt.datetime
    updated_at: dt.datetime


_COLUMNS = (
    Payment.id,
    Payment.status,
    Payment.gateway,
    Payment.gateway_reference,
    _BUSY,
    Payment.amount_captured,
    Payment.created_at,
    Payment.updated_at,
)


@dataclass(frozen=True, slots=True)
class RefundSnapshot:
    """A refund as reconciliation compares it, with its payment's gateway."""

    id: str
    payment_id: str
    gateway: str
    status: str
    amount: int
    gateway_reference: str | None
    created_at: dt.datetime


class ReconcileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def payment(self, payment_id: str) -> PaymentSnapshot | None:
        row = (
            await self.session.execute(select(*_COLUMNS).where(Payment.id == payment_id))
        ).first()
        return None if row is None else PaymentSnapshot(*row)

    async def order_held_by_another(self, payment_id: str) -> bool:
        other = aliased(Payment)
        query = (
            select(other.id)
            .join(Payment, Payment.order_id == other.order_id)
            .where(Payment.id == payment_id, other.id != payment_id, other.status.in_(sorted(LIVE)))
            .limit(1)
        )
        return (await self.session.scalars(query)).first() is not None

    async def payments(
        self,
        *,
        created_gte: dt.datetime,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> Sequence[PaymentSnapshot]:
        """Payments the gateway may know something about (a gateway reference, processing, or
        an operation at all), oldest first, a page at a time."""
        query = select(*_COLUMNS).where(
            Payment.created_at >= created_gte,
            or_(
                Payment.gateway_reference.is_not(None),
                Payment.status == PaymentStatus.PROCESSING,
                select(Operation.id).where(Operation.payment_id == Payment.id).exists(),
            ),
        )
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    Payment.created_at > created,
                    and_(Payment.created_at == created, Payment.id > last_id),
                )
            )
        query = query.order_by(Payment.created_at, Payment.id).limit(limit)
        rows = (await self.session.execute(query)).all()
        return [PaymentSnapshot(*row) for row in rows]

    async def refunds(
        self,
        *,
        created_gte: dt.datetime,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> Sequence[RefundSnapshot]:
        """Settled refunds the gateway has named, oldest first, a page at a time (pending
        ones belong to the completer, through their operation)."""
        query = (
            select(
                Refund.id,
                Refund.payment_id,
                Payment.gateway,
                Refund.status,
                Refund.amount,
                Refund.gateway_reference,
                Refund.created_at,
            )
            .join(Payment, Payment.id == Refund.payment_id)
            .where(
                Refund.created_at >= created_gte,
                Refund.status != RefundStatus.PENDING,
                Refund.gateway_reference.is_not(None),
            )
        )
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    Refund.created_at > created,
                    and_(Refund.created_at == created, Refund.id > last_id),
                )
            )
        query = query.order_by(Refund.created_at, Refund.id).limit(limit)
        rows = (await self.session.execute(query)).all()
        return [RefundSnapshot(*row) for row in rows]
