"""All SQL about payments and their history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.errors import InvalidRequest
from paysvc.payments.models import Payment, PaymentEvent
from paysvc.payments.states import LIVE

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    customer_id: str | None = None
    order_id: str | None = None
    status: str | None = None
    created_gte: dt.datetime | None = None
    created_lt: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_more: bool


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        query = select(Payment).where(Payment.id == payment_id)
        if for_update:
            # PostgreSQL row lock; SQLite already holds the write lock (BEGIN IMMEDIATE).
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    async def get_by_reference(self, reference: str, *, for_update: bool = False) -> Payment | None:
        query = select(Payment).where(Payment.gateway_reference == reference)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    def add(self, payment: Payment) -> None:
        self.session.add(payment)

    def add_event(self, event: PaymentEvent) -> None:
        self.session.add(event)

    async def order_is_held(self, order_id: str, *, other_than: str) -> bool:
        query = select(Payment.id).where(
            Payment.order_id == order_id,
            Payment.id != other_than,
            or_(Payment.status.in_(sorted(LIVE)), Payment.pending_operation == "confirm"),
        )
        return (await self.session.scalars(query.limit(1))).first() is not None

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
        if starting_after is not None:
            cursor = await self.session.get(Payment, starting_after)
            if cursor is None or (
                where.customer_id is not None and cursor.customer_id != where.customer_id
            ):
                raise InvalidRequest("No such cursor", param="starting_after")
            query = query.where(
                or_(
                    Payment.created_at < cursor.created_at,
                    and_(Payment.created_at == cursor.created_at, Payment.id < cursor.id),
                )
            )
        query = query.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit + 1)
        rows: list[Payment] = list(await self.session.scalars(query))
        return Page(items=rows[:limit], has_more=len(rows) > limit)

    async def events(self, payment_id: str) -> Sequence[PaymentEvent]:
        query = (
            select(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id)
            .order_by(PaymentEvent.created_at, PaymentEvent.id)
        )
        return list(await self.session.scalars(query))
