"""All SQL about refunds."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.db.pagination import Page, keyset_page
from paysvc.refunds.models import Refund
from paysvc.refunds.states import OUTSTANDING, RefundStatus


class RefundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, refund: Refund) -> None:
        self.session.add(refund)

    async def get(self, refund_id: str, *, for_update: bool = False) -> Refund | None:
        query = select(Refund).where(Refund.id == refund_id)
        if for_update:
            # Take it after the payment's lock (fixed order: payment, then refund).
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    async def get_by_reference(self, reference: str) -> Refund | None:
        query = select(Refund).where(Refund.gateway_reference == reference)
        return (await self.session.scalars(query)).first()

    async def outstanding_total(self, payment_id: str) -> int:
        """Sum of the payment's succeeded and pending refunds (what is no longer refundable)."""
        query = select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment_id, Refund.status.in_(sorted(OUTSTANDING))
        )
        return int(await self.session.scalar(query) or 0)

    async def has_unreferenced_pending(self, payment_id: str) -> bool:
        """Whether the payment has a pending refund the gateway has not named yet (its call
        is in flight or its answer was lost)."""
        query = select(Refund.id).where(
            Refund.payment_id == payment_id,
            Refund.status == RefundStatus.PENDING,
            Refund.gateway_reference.is_(None),
        )
        return (await self.session.scalar(query.limit(1))) is not None

    async def list_for_payment(
        self, payment_id: str, *, limit: int, starting_after: str | None
    ) -> Page[Refund]:
        return await keyset_page(
            self.session,
            Refund,
            select(Refund).where(Refund.payment_id == payment_id),
            limit=limit,
            starting_after=starting_after,
            visible=lambda cursor: cursor.payment_id == payment_id,
        )
