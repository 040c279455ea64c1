"""The transaction report's definitions: how grouped aggregates roll up into the figures.

- count: payments created in the range; volume: the sum of their `amount`;
- captured / refunded: sums of `amount_captured` / `amount_refunded`; net = captured - refunded;
- success_rate: payments now authorized, captured, partially_refunded or refunded, divided by
  payments that were confirmed (every status except pending, and cancelled ones no confirm
  was ever attempted for);
- refund_rate: refunded / captured (money, not counts).
Rates are decimal strings with 4 places (`"0.9500"`, rounded half up), null when the
denominator is 0. Money is per currency: summing different currencies means nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from paysvc.admin.repository import GroupRow
from paysvc.payments.states import PaymentStatus

_PLACES = Decimal("0.0001")


def ratio(numerator: int, denominator: int) -> str | None:
    """`"0.9500"`: exact decimal arithmetic, never a float; None when there is nothing to divide."""
    if denominator == 0:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(_PLACES, ROUND_HALF_UP))


@dataclass(slots=True)
class Figures:
    count: int = 0
    volume: int = 0
    captured: int = 0
    refunded: int = 0
    succeeded: int = 0
    confirmed: int = 0

    def add(self, row: GroupRow) -> None:
        self.count += row.count
        self.volume += row.volume
        self.captured += row.captured
        self.refunded += row.refunded
        self.succeeded += row.succeeded
        self.confirmed += row.confirmed

    @property
    def net(self) -> int:
        return self.captured - self.refunded

    @property
    def success_rate(self) -> str | None:
        return ratio(self.succeeded, self.confirmed)

    @property
    def refund_rate(self) -> str | None:
        return ratio(self.refunded, self.captured)


@dataclass(frozen=True, slots=True)
class DayFigures:
    date: dt.date
    currency: str
    figures: Figures


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    start: dt.date
    end: dt.date  # inclusive
    currency: str | None
    totals: dict[str, Figures]
    by_status: dict[str, int]
    by_day: list[DayFigures] | None = field(default=None)


def summarize(
    groups: Iterable[GroupRow],
    *,
    start: dt.date,
    end: dt.date,
    currency: str | None,
    by_day: bool,
) -> TransactionSummary:
    """Roll the grouped rows up. A filtered currency is always present (zeros when idle);
    with `by_day`, every day of the range is present for every currency (zeros included)."""
    totals: dict[str, Figures] = {currency: Figures()} if currency else {}
    by_status = {str(status): 0 for status in PaymentStatus}
    days: dict[tuple[dt.date, str], Figures] = {}
    for row in groups:  # one row per (currency, status), or per (day, currency)
        if row.day is not None:
            days.setdefault((row.day, row.currency), Figures()).add(row)
        else:
            totals.setdefault(row.currency, Figures()).add(row)
            by_status[row.status or ""] = by_status.get(row.status or "", 0) + row.count
    day_list: list[DayFigures] | None = None
    if by_day:
        day_list = [
            DayFigures(day, code, days.get((day, code), Figures()))
            for day in _dates(start, end)
            for code in sorted(totals)
        ]
    return TransactionSummary(
        start=start,
        end=end,
        currency=currency,
        totals=dict(sorted(totals.items())),
        by_status=by_status,
        by_day=day_list,
    )


def _dates(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)
