"""All SQL about disputes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.disputes.models import Dispute
from paysvc.errors import InvalidRequest
from paysvc.payments.repository import Page


class DisputeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_reference(self, reference: str) -> Dispute | None:
        query = select(Dispute).where(Dispute.gateway_reference == reference)
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    def add(self, dispute: Dispute) -> None:
        self.session.add(dispute)

    async def statuses_of(self, payment_id: str) -> Sequence[str]:
        query = select(Dispute.status).where(Dispute.payment_id == payment_id)
        return list(await self.session.scalars(query))

    async def list(
        self, payment_id: str, *, limit: int, starting_after: str | None
    ) -> Page[Dispute]:
        query = select(Dispute).where(Dispute.payment_id == payment_id)
        if starting_after is not None:
            cursor = await self.session.get(Dispute, starting_after)
            if cursor is None or cursor.payment_id != payment_id:
                raise InvalidRequest("No such cursor", param="starting_after")
            query = query.where(
                or_(
                    Dispute.created_at < cursor.created_at,
                    and_(Dispute.created_at == cursor.created_at, Dispute.id < cursor.id),
                )
            )
        query = query.order_by(Dispute.created_at.desc(), Dispute.id.desc()).limit(limit + 1)
        rows = list(await self.session.scalars(query))
        return Page(items=rows[:limit], has_more=len(rows) > limit)
