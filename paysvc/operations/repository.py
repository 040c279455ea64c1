"""All SQL about operations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.operations.models import Operation
from paysvc.operations.states import CONFIRMS, OPEN, OperationStatus
from paysvc.payments.models import Payment
from paysvc.payments.states import LIVE


class Rule:
    """Rows whose columns each take one of the given values: one definition, checked over rows
    already read (`rule(row)`) and as a WHERE clause (`rule.where(Model)`)."""

    def __init__(self, **allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def __call__(self, row: object) -> bool:
        return all(getattr(row, column) in values for column, values in self.allowed.items())

    def where(self, model: type[Any]) -> ColumnElement[bool]:
        return and_(
            *(getattr(model, column).in_(sorted(values)) for column, values in self.allowed.items())
        )


# An order is held by another of its payments that is live, or that has a confirm the gateway
# may still take (`order_held` over rows read under the order's lock; `order_is_held` in SQL).
HOLDS_ORDER = Rule(status=LIVE)  # a payment
MAY_STILL_TAKE = Rule(kind=CONFIRMS, status=OPEN)  # an operation


def order_held(order: Sequence[Payment], ops: Iterable[Operation], *, other_than: str) -> bool:
    """`OperationRepository.order_is_held` over rows already read under the order's lock."""
    others = {p.id for p in order if p.id != other_than}
    return any(HOLDS_ORDER(p) for p in order if p.id in others) or any(
        o.payment_id in others and MAY_STILL_TAKE(o) for o in ops
    )


# The hot path's statements, built once (see paysvc.payments.repository).
_FOR_PAYMENTS = (
    select(Operation)
    .where(Operation.payment_id.in_(bindparam("ids", expanding=True)))
    .order_by(Operation.created_at, Operation.id)
    .execution_options(populate_existing=True)
)
_OPEN_AND_LOCKED = (
    select(Operation)
    .where(
        Operation.payment_id == bindparam("payment_id"),
        or_(Operation.status.in_(sorted(OPEN)), Operation.id == bindparam("op_id")),
    )
    .order_by(Operation.created_at, Operation.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)
_ORDER_HELD = (
    select(Payment.id)
    .where(
        Payment.order_id == bindparam("order_id"),
        Payment.id != bindparam("other_than"),
        or_(
            HOLDS_ORDER.where(Payment),
            select(Operation.id)
            .where(Operation.payment_id == Payment.id, MAY_STILL_TAKE.where(Operation))
            .exists(),
        ),
    )
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class LedgerStats:
    pending: int
    unknown: int
    oldest_open: dt.datetime | None


class OperationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, op: Operation) -> None:
        self.session.add(op)

    async def get(self, op_id: str, *, for_update: bool = False) -> Operation | None:
        query = select(Operation).where(Operation.id == op_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    async def for_payment(self, payment_id: str) -> Sequence[Operation]:
        """Oldest first."""
        query = (
            select(Operation)
            .where(Operation.payment_id == payment_id)
            .order_by(Operation.created_at, Operation.id)
        )
        return list(await self.session.scalars(query))

    async def for_payments(self, payment_ids: Sequence[str]) -> Sequence[Operation]:
        """The operations of these payments (e.g. every payment of an order), oldest first."""
        return list(await self.session.scalars(_FOR_PAYMENTS, {"ids": list(payment_ids)}))

    async def lock_open_and(self, payment_id: str, op_id: str) -> Sequence[Operation]:
        """The payment's open operations and `op` (open or not), locked, oldest first: in
        one statement, what settling `op` reads and may move (the payment is locked first)."""
        query = _OPEN_AND_LOCKED
        return list(await self.session.scalars(query, {"payment_id": payment_id, "op_id": op_id}))

    async def open_for_payment(self, payment_id: str) -> Sequence[Operation]:
        query = (
            select(Operation)
            .where(Operation.payment_id == payment_id, Operation.status.in_(sorted(OPEN)))
            .order_by(Operation.created_at, Operation.id)
            .execution_options(populate_existing=True)
        )
        return list(await self.session.scalars(query))

    async def for_refund(self, refund_id: str, *, for_update: bool = False) -> Operation | None:
        query = select(Operation).where(Operation.refund_id == refund_id).limit(1)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    async def order_is_held(self, order_id: str, *, other_than: str) -> bool:
        """Another payment of the order is live, or has a confirm the gateway may still take
        (`order_held`'s rule, as one query)."""
        found = await self.session.scalars(
            _ORDER_HELD, {"order_id": order_id, "other_than": other_than}
        )
        return found.first() is not None

    async def due(self, before: dt.datetime | None, *, limit: int) -> Sequence[str]:
        """Pending operations, and those waiting for the customer (3-D Secure), whose next
        check is due by `before` (None: all), oldest first."""
        query = select(Operation.id).where(
            Operation.status.in_((OperationStatus.PENDING, OperationStatus.REQUIRES_ACTION))
        )
        if before is not None:
            query = query.where(Operation.next_check_at <= before)
        query = query.order_by(Operation.next_check_at, Operation.id).limit(limit)
        return list(await self.session.scalars(query))

    async def with_status(self, status: OperationStatus, *, limit: int) -> Sequence[Operation]:
        query = (
            select(Operation)
            .where(Operation.status == status)
            .order_by(Operation.created_at, Operation.id)
            .limit(limit)
        )
        return list(await self.session.scalars(query))

    async def stats(self) -> LedgerStats:
        rows = await self.session.execute(
            select(Operation.status, func.count())
            .where(Operation.status.in_(sorted(OPEN)))
            .group_by(Operation.status)
        )
        counts = {status: count for status, count in rows.all()}
        # A charge waiting for the customer (3-D Secure) is not stuck: not counted here.
        stuck = (OperationStatus.PENDING, OperationStatus.UNKNOWN)
        oldest = await self.session.scalar(
            select(func.min(Operation.created_at)).where(Operation.status.in_(stuck))
        )
        return LedgerStats(
            pending=int(counts.get(OperationStatus.PENDING, 0)),
            unknown=int(counts.get(OperationStatus.UNKNOWN, 0)),
            oldest_open=oldest,
        )

    async def charged_twice(self, *, limit: int) -> Sequence[tuple[Operation, Payment]]:
        """Succeeded charge operations whose payment could not take the money (its order was
        already paid by another payment): money to give back."""
        query = (
            select(Operation, Payment)
            .join(Payment, Payment.id == Operation.payment_id)
            .where(
                Operation.kind.in_(sorted(CONFIRMS)),
                Operation.status == OperationStatus.SUCCEEDED,
                Payment.status.not_in(sorted(LIVE | {"refunded", "cancelled"})),
            )
            .order_by(Operation.created_at, Operation.id)
            .limit(limit)
        )
        return list((await self.session.execute(query)).tuples())
