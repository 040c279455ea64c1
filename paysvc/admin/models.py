"""The per-day rollup behind `/admin/transactions`.

One row per (UTC day of creation, currency, status, shard) with the figures the report sums.
It is kept by database triggers on `payments` (see the `payment_daily_totals` migration), so it
changes in the same transaction as the payment row it counts, whichever code path writes that
row: each insert adds the row's figures under its key, each update subtracts the old figures and
adds the new ones, each delete subtracts. `shard` (0 on SQLite, a hash of the payment id mod 8 on
PostgreSQL) spreads concurrent writers over several rows, so they do not queue on one row lock.
`paysvc admin rebuild-rollup` recomputes it from `payments`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base


class PaymentDailyTotal(Base):
    __tablename__ = "payment_daily_totals"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(BigInteger)
    attempted: Mapped[int] = mapped_column(BigInteger)
    volume: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[int] = mapped_column(BigInteger)
