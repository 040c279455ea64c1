"""Admin request schemas (validation and OpenAPI) and the transaction report's rendering."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from paysvc.admin.report import Figures, TransactionSummary
from paysvc.payments.states import PaymentStatus
from paysvc.schemas import Currency

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

DEFINITIONS = (
    "Payments created from `from` 00:00 UTC up to the end of `to` (UTC, inclusive; default the "
    "last 30 days; at most 366 days). Money is integers in minor units, per currency: "
    "`totals` is keyed by currency and `by_day` has one entry per day and currency. "
    "count = payments created in the range; volume = sum of their `amount`; captured = sum of "
    "`amount_captured`; refunded = sum of `amount_refunded`; net = captured - refunded; "
    "success_rate = payments now authorized, captured, partially_refunded or refunded / "
    "payments that were confirmed (all but pending, and cancelled ones that never had a confirm "
    "attempt); refund_rate = refunded / captured. Rates are decimal strings with 4 places "
    '(`"0.9500"`, rounded half up), null when the denominator is 0. `by_status` counts '
    "payments per current status over all currencies (every status present). `by_day` (only "
    "with group_by=day) lists every day of the range for every currency in `totals`, zeros "
    "included."
)


class IsoDate(fields.Date):
    """`YYYY-MM-DD`, nothing else (no week dates, no basic format, no times)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if not isinstance(value, str) or not _DATE.match(value):
            raise ValidationError("must be a date YYYY-MM-DD")
        return super()._deserialize(value, attr, data, **kwargs)


class TransactionQuery(Schema):
    start = IsoDate(data_key="from", metadata={"description": "first day (UTC), inclusive"})
    end = IsoDate(data_key="to", metadata={"description": "last day (UTC), inclusive"})
    group_by = fields.String(validate=validate.OneOf(("day",)))
    currency = Currency(metadata={"description": "only this currency"})


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")


class StatusCorrectionRequest(Schema):
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in PaymentStatus]))
    reason = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=500), _not_blank],
        metadata={"description": "why; kept in the payment's history and the audit trail"},
    )


class FiguresOut(Schema):
    count = fields.Integer()
    volume = fields.Integer()
    captured = fields.Integer()
    refunded = fields.Integer()
    net = fields.Integer()


class TotalsOut(FiguresOut):
    success_rate = fields.String(allow_none=True, metadata={"example": "0.9500"})
    refund_rate = fields.String(allow_none=True, metadata={"example": "0.0125"})


class DayOut(FiguresOut):
    date = fields.String(metadata={"example": "2026-11-26"})
    currency = fields.String(metadata={"example": "usd"})


class TransactionSummaryOut(Schema):
    object = fields.Constant("transaction_summary")
    from_ = fields.String(data_key="from", metadata={"example": "2026-10-28"})
    to = fields.String(metadata={"example": "2026-11-26"})
    currency = fields.String(metadata={"description": "present when filtered"})
    totals = fields.Dict(keys=fields.String(), values=fields.Nested(TotalsOut))
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_day = fields.List(fields.Nested(DayOut), metadata={"description": "with group_by=day"})


def _figures(figures: Figures) -> dict[str, int]:
    return {
        "count": figures.count,
        "volume": figures.volume,
        "captured": figures.captured,
        "refunded": figures.refunded,
        "net": figures.net,
    }


def render_summary(summary: TransactionSummary) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "transaction_summary",
        "from": summary.start.isoformat(),
        "to": summary.end.isoformat(),
    }
    if summary.currency is not None:
        body["currency"] = summary.currency
    body["totals"] = {
        code: {
            **_figures(figures),
            "success_rate": figures.success_rate,
            "refund_rate": figures.refund_rate,
        }
        for code, figures in summary.totals.items()
    }
    body["by_status"] = summary.by_status
    if summary.by_day is not None:
        body["by_day"] = [
            {"date": day.date.isoformat(), "currency": day.currency, **_figures(day.figures)}
            for day in summary.by_day
        ]
    return body
