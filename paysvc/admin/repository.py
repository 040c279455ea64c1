"""All SQL for the admin transaction report: one GROUP BY over the per-day rollup (or, to
rebuild or check it, over the payments themselves)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, case, delete, func, insert, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from paysvc.admin.models import PaymentDailyTotal
from paysvc.payments.models import Payment


class utc_day(FunctionElement[dt.date]):
    """The UTC calendar day of a timestamp (a `date` in Python), on every dialect.

    Literals only (no bound parameters), so PostgreSQL sees the same expression in SELECT and
    GROUP BY."""

    type = Date()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores our UTC timestamps as naive ISO text (see UTCDateTime).
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # timestamptz -> UTC wall time, independent of the session's TimeZone, then its date (a
    # date groups by hash; to_char text sorted on disk and was 3x slower over a year of rows).
    column = compiler.process(element.clauses, **kw)
    return f"CAST(timezone('UTC', {column}) AS DATE)"


@dataclass(frozen=True, slots=True)
class GroupRow:
    """Aggregates of the payments sharing (day, currency, status); day is None unless asked."""

    day: dt.date | None
    currency: str
    status: str
    count: int
    attempted: int  # of those, how many had a confirm attempted
    volume: int
    captured: int
    refunded: int


# The payment reached the gateway: anything but an unconfirmed intent (pending, or cancelled
# before it ever had a gateway reference). Read off the row itself, so the rollup's triggers
# (migration payment_daily_totals) keep it in the same transaction; the same SQL there.
ATTEMPTED = or_(
    Payment.status.not_in(("pending", "cancelled")), Payment.gateway_reference.is_not(None)
)


class TransactionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def groups(
        self,
        *,
        created_gte: dt.datetime,
        created_lt: dt.datetime,
        currency: str | None,
        by_day: bool,
    ) -> Sequence[GroupRow]:
        """From the rollup (whole UTC days: `created_gte`/`created_lt` are midnights). One
        statement (one snapshot), so totals, by-status and by-day figures always agree; its
        size is days x currencies x statuses x shards, however many payments there are."""
        total = PaymentDailyTotal
        keys: list[Any] = [total.currency, total.status]
        if by_day:
            keys.insert(0, total.day)
        query = (
            select(
                *keys,
                *(func.sum(getattr(total, name)) for name in FIGURES),
            )
            .where(total.day >= created_gte.date(), total.day < created_lt.date())
            .group_by(*keys)
            .having(func.sum(total.count) != 0)
        )
        if currency is not None:
            query = query.where(total.currency == currency)
        return self._rows(await self.session.execute(query), len(keys), by_day)

    async def scan_groups(
        self,
        *,
        created_gte: dt.datetime,
        created_lt: dt.datetime,
        currency: str | None,
        by_day: bool,
    ) -> Sequence[GroupRow]:
        """The same figures computed from the payments themselves (a scan of the range)."""
        keys: list[Any] = [Payment.currency, Payment.status]
        if by_day:
            keys.insert(0, utc_day(Payment.created_at))
        query = (
            select(*keys, *_payment_figures())
            .where(Payment.created_at >= created_gte, Payment.created_at < created_lt)
            .group_by(*keys)
        )
        if currency is not None:
            query = query.where(Payment.currency == currency)
        return self._rows(await self.session.execute(query), len(keys), by_day)

    async def rebuild_rollup(self) -> int:
        """Recompute the whole rollup from `payments` (in the caller's write unit of work; on
        PostgreSQL payments are share-locked meanwhile so no trigger delta is lost or doubled).
        Returns how many rollup rows were written."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(text("LOCK TABLE payments IN SHARE MODE"))
            shard: Any = func.mod(func.abs(func.hashtext(Payment.id)), ROLLUP_SHARDS)
        else:
            shard = literal(0)
        day = utc_day(Payment.created_at)
        source = select(day, Payment.currency, Payment.status, shard, *_payment_figures()).group_by(
            day, Payment.currency, Payment.status, shard
        )
        table: Any = PaymentDailyTotal.__table__
        await self.session.execute(delete(table))
        result = await self.session.execute(
            insert(table).from_select(["day", "currency", "status", "shard", *FIGURES], source)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    @staticmethod
    def _rows(result: Any, key_count: int, by_day: bool) -> list[GroupRow]:
        groups = []
        for row in result.all():
            day = row[0] if by_day else None
            currency_, status, *sums = row[key_count - 2 :]
            # PostgreSQL sums bigints as numeric (Decimal): back to int.
            count, attempted, volume, captured, refunded = (int(value) for value in sums)
            groups.append(
                GroupRow(day, currency_, status, count, attempted, volume, captured, refunded)
            )
        return groups


FIGURES = ("count", "attempted", "volume", "captured", "refunded")
ROLLUP_SHARDS = 8  # as in the payment_daily_totals migration's trigger


def _payment_figures() -> list[Any]:
    return [
        func.count(),
        func.coalesce(func.sum(case((ATTEMPTED, 1), else_=0)), 0),
        func.coalesce(func.sum(Payment.amount), 0),
        func.coalesce(func.sum(Payment.amount_captured), 0),
        func.coalesce(func.sum(Payment.amount_refunded), 0),
    ]
