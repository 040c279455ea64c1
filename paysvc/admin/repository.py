"""All SQL for the admin transaction report: one GROUP BY over the per-day rollup (or, to
rebuild or check it, over the payments themselves)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
)
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
    """Sums over the payments of one (currency, status) — `day` None — or of one (day,
    currency) — `status` None — in the range."""

    day: dt.date | None
    currency: str
    status: str | None
    count: int
    volume: int
    captured: int
    refunded: int
    succeeded: int  # of those, now authorized, captured, partially refunded or refunded
    confirmed: int  # of those, confirmed: all but pending, and cancelled before any confirm


# The payment reached the gateway: anything but an unconfirmed intent (pending, or cancelled
# before it ever had a gateway reference). Read off the row itself, so the rollup's triggers
# (migration payment_daily_totals) keep it in the same transaction; the same SQL there.
ATTEMPTED = or_(
    Payment.status.not_in(("pending", "cancelled")), Payment.gateway_reference.is_not(None)
)
SUCCEEDED = ("authorized", "captured", "partially_refunded", "refunded")


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
    ) -> list[GroupRow]:
        """From the rollup (whole UTC days: `created_gte`/`created_lt` are midnights). One
        statement (one snapshot), so totals, by-status and by-day figures always agree; it
        reads days x currencies x statuses x shards rollup rows, however many payments there
        are, and returns statuses + days x currencies rows."""
        total = PaymentDailyTotal
        where = [total.day >= created_gte.date(), total.day < created_lt.date()]
        if currency is not None:
            where.append(total.currency == currency)
        figures = {name: getattr(total, name) for name in FIGURES}
        return await self._groups(total.day, total.currency, total.status, figures, where, by_day)

    async def scan_groups(
        self,
        *,
        created_gte: dt.datetime,
        created_lt: dt.datetime,
        currency: str | None,
        by_day: bool,
    ) -> list[GroupRow]:
        """The same figures computed from the payments themselves (a scan of the range)."""
        where = [Payment.created_at >= created_gte, Payment.created_at < created_lt]
        if currency is not None:
            where.append(Payment.currency == currency)
        day = utc_day(Payment.created_at)
        return await self._groups(
            day, Payment.currency, Payment.status, _payment_values(), where, by_day
        )

    async def _groups(
        self,
        day: Any,
        currency: Any,
        status: Any,
        figures: dict[str, Any],
        where: list[Any],
        by_day: bool,
    ) -> list[GroupRow]:
        """Sums by (currency, status) and, with `by_day`, by (day, currency) — both in one
        statement, the rates' numerators and denominators summed by the database too, so
        Python only adds up statuses + days x currencies rows. The source is read once (a CTE
        of sums by day, currency and status — shards and payments summed away), in bigints
        (PostgreSQL's numeric sums cost more than the scan)."""
        keys = [day.label("day")] if by_day else []
        keys += [currency.label("currency"), status.label("status")]
        groups = (
            select(*keys, *(_bigint(func.sum(figures[name])).label(name) for name in FIGURES))
            .where(*where)
            .group_by(*keys)
            .cte("grouped")
        )
        g = groups.c
        sums = [
            *(_bigint(_sum(g[name])) for name in ("count", "volume", "captured", "refunded")),
            _bigint(_sum(case((g.status.in_(SUCCEEDED), g.count), else_=0))),
            # A cancelled payment counts as confirmed only if a confirm was attempted (a void).
            _bigint(
                _sum(
                    case(
                        (g.status == "pending", 0),
                        (g.status == "cancelled", g.attempted),
                        else_=g.count,
                    )
                )
            ),
        ]
        query: Any = (
            select(cast(null(), Date), g.currency, g.status, *sums)
            .group_by(g.currency, g.status)
            .having(_sum(g.count) != 0)
        )
        if by_day:
            daily = (
                select(g.day, g.currency, null(), *sums)
                .group_by(g.day, g.currency)
                .having(_sum(g.count) != 0)
            )
            query = union_all(query, daily)
        return [GroupRow(*row) for row in (await self.session.execute(query)).all()]

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
        source = select(
            day,
            Payment.currency,
            Payment.status,
            shard,
            *(_sum(value) for value in _payment_values().values()),
        ).group_by(day, Payment.currency, Payment.status, shard)
        table: Any = PaymentDailyTotal.__table__
        await self.session.execute(delete(table))
        result = await self.session.execute(
            insert(table).from_select(["day", "currency", "status", "shard", *FIGURES], source)
        )
        return int(getattr(result, "rowcount", 0) or 0)


FIGURES = ("count", "attempted", "volume", "captured", "refunded")
ROLLUP_SHARDS = 8  # as in the payment_daily_totals migration's trigger


def _bigint(value: Any) -> Any:
    return cast(value, BigInteger)


def _sum(value: Any) -> Any:
    return func.coalesce(func.sum(value), 0)


def _payment_values() -> dict[str, Any]:
    """What each payment adds to each of FIGURES (as the rollup's triggers add it)."""
    return {
        "count": literal_column("1"),
        "attempted": case((ATTEMPTED, 1), else_=0),
        "volume": Payment.amount,
        "captured": Payment.amount_captured,
        "refunded": Payment.amount_refunded,
    }
