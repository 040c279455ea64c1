"""All SQL reconciliation needs: which payments and refunds to compare with the gateway."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.db.pagination import beyond
from paysvc.payments.models import Payment
from paysvc.payments.states import PaymentStatus
from paysvc.refunds.models import Refund
from paysvc.refunds.states import RefundStatus


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """The columns reconciliation compares (no encrypted fields are read)."""

    id: str
    status: str
    gateway: str
    gateway_reference: str | None
    pending_operation: str | None
    pending_since: dt.datetime | None
    amount_captured: int
    created_at: dt.datetime
    updated_at: dt.datetime


_COLUMNS = (
    Payment.id,
    Payment.status,
    Payment.gateway,
    Payment.gateway_reference,
    Payment.pending_operation,
    Payment.pending_since,
    Payment.amount_captured,
    Payment.created_at,
    Payment.updated_at,
)


def snapshot(payment: Payment) -> PaymentSnapshot:
    return PaymentSnapshot(
        id=payment.id,
        status=payment.status,
        gateway=payment.gateway,
        gateway_reference=payment.gateway_reference,
        pending_operation=payment.pending_operation,
        pending_since=payment.pending_since,
        amount_captured=payment.amount_captured,
        created_at=payment.created_at,
        updated_at=payment.updated_at,
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
    pending_since: dt.datetime | None
    created_at: dt.datetime


class ReconcileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def payments(
        self,
        *,
        created_gte: dt.datetime,
        stuck_before: dt.datetime | None,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> Sequence[PaymentSnapshot]:
        """Payments the gateway may know something about, oldest first, a page at a time.

        All of them: anything with a gateway reference, in processing, with an operation in
        flight, or ever confirmed. Only the stuck (`stuck_before` set): processing ones and
        those whose operation has been in flight since before `stuck_before`."""
        query = select(*_COLUMNS).where(Payment.created_at >= created_gte)
        processing = Payment.status == PaymentStatus.PROCESSING
        if stuck_before is None:
            query = query.where(
                or_(
                    Payment.gateway_reference.is_not(None),
                    processing,
                    Payment.pending_operation.is_not(None),
                    Payment.confirm_attempts > 0,
                )
            )
        else:
            query = query.where(
                or_(
                    processing,
                    and_(
                        Payment.pending_operation.is_not(None),
                        Payment.pending_since < stuck_before,
                    ),
                )
            )
        if after is not None:
            query = query.where(beyond((Payment.created_at, Payment.id), after, descending=False))
        query = query.order_by(Payment.created_at, Payment.id).limit(limit)
        rows = (await self.session.execute(query)).all()
        return [PaymentSnapshot(*row) for row in rows]

    async def refunds(
        self,
        *,
        created_gte: dt.datetime,
        stuck_before: dt.datetime | None,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> Sequence[RefundSnapshot]:
        """Refunds the gateway may know something about, oldest first, a page at a time.

        All of them: pending ones and those the gateway has named (a refund that failed
        before reaching the gateway has nothing to compare). Only the stuck (`stuck_before`
        set): pending ones whose gateway call was handed off before `stuck_before`."""
        query = (
            select(
                Refund.id,
                Refund.payment_id,
                Payment.gateway,
                Refund.status,
                Refund.amount,
                Refund.gateway_reference,
                Refund.pending_since,
                Refund.created_at,
            )
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.created_at >= created_gte)
        )
        pending = Refund.status == RefundStatus.PENDING
        if stuck_before is None:
            query = query.where(or_(pending, Refund.gateway_reference.is_not(None)))
        else:
            query = query.where(pending, Refund.pending_since < stuck_before)
        if after is not None:
            query = query.where(beyond((Refund.created_at, Refund.id), after, descending=False))
        query = query.order_by(Refund.created_at, Refund.id).limit(limit)
        rows = (await self.session.execute(query)).all()
        return [RefundSnapshot(*row) for row in rows]
