"""All SQL about payments and their history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from paysvc.db.pagination import Page, keyset_page
from paysvc.db.staged import stage
from paysvc.payments.models import Payment, PaymentEvent


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    customer_id: str | None = None
    order_id: str | None = None
    status: str | None = None
    created_gte: dt.datetime | None = None
    created_lt: dt.datetime | None = None


# The hot path's statements, built once (a statement built per call cost more CPU than
# running it; a reused one also keeps its cache key).
_BY_ID = (
    select(Payment)
    .where(Payment.id == bindparam("payment_id"))
    .execution_options(populate_existing=True)
)
# PostgreSQL row lock; SQLite already holds the write lock (BEGIN IMMEDIATE).
_BY_ID_LOCKED = _BY_ID.with_for_update()
_THIS = aliased(Payment)
_ORDER_OF_LOCKED = (
    select(Payment)
    .where(
        Payment.order_id
        == select(_THIS.order_id).where(_THIS.id == bindparam("payment_id")).scalar_subquery()
    )
    .order_by(Payment.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        query = _BY_ID_LOCKED if for_update else _BY_ID
        return (await self.session.scalars(query, {"payment_id": payment_id})).first()

    async def get_by_reference(self, reference: str, *, for_update: bool = False) -> Payment | None:
        query = select(Payment).where(Payment.gateway_reference == reference)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    def add(self, payment: Payment) -> None:
        self.session.add(payment)

    def add_event(self, event: PaymentEvent) -> None:
        stage(self.session, event)

    async def lock_order_of(self, payment_id: str) -> list[Payment]:
        """Every payment of this payment's order, locked in id order, in one statement
        (PostgreSQL row locks; SQLite holds the write lock already). Empty when there is no
        such payment."""
        return list(await self.session.scalars(_ORDER_OF_LOCKED, {"payment_id": payment_id}))

    async def list(
        self, where: PaymentFilter, *, limit: int, starting_after: str | None
    ) -> Page[Payment]:
        query: Select[tuple[Payment]] = select(Payment)
        if where.customer_id is not None:
            query = query.where(Payment.customer_id == where.customer_id)
        if where.order_id is not None:
            query = query.where(Payment.order_id == where.order_id)
        if where.status is not None:
            query = query.where(Payment.status == where.status)
        if where.created_gte is not None:
            query = query.where(Payment.created_at >= where.created_gte)
        if where.created_lt is not None:
            query = query.where(Payment.created_at < where.created_lt)
        return await keyset_page(
            self.session,
            Payment,
            query,
            limit=limit,
            starting_after=starting_after,
            visible=lambda cursor: where.customer_id in (None, cursor.customer_id),
        )

    async def events(self, payment_id: str) -> Sequence[PaymentEvent]:
        query = (
            select(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id)
            .order_by(PaymentEvent.created_at, PaymentEvent.id)
        )
        return list(await self.session.scalars(query))
