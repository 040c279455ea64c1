"""All SQL about disputes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.db.pagination import Page, keyset_page
from paysvc.disputes.models import Dispute


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
        return await keyset_page(
            self.session,
            Dispute,
            select(Dispute).where(Dispute.payment_id == payment_id),
            limit=limit,
            starting_after=starting_after,
            visible=lambda cursor: cursor.payment_id == payment_id,
        )
