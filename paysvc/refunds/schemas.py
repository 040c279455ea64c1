"""Refund request schemas (validation and OpenAPI) and the refund object's rendering."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from paysvc.clock import rfc3339
from paysvc.money import MAX_AMOUNT
from paysvc.refunds.models import Refund
from paysvc.refunds.states import RefundReason, RefundStatus
from paysvc.schemas import StrictInt, metadata_field, metadata_out

REFUND_REASONS = tuple(r.value for r in RefundReason)


class CreateRefundRequest(Schema):
    amount = StrictInt(
        validate=validate.Range(min=1, max=MAX_AMOUNT),
        metadata={
            "description": "Integer in the currency's minor unit; "
            "defaults to all that remains refundable"
        },
    )
    reason = fields.String(validate=validate.OneOf(REFUND_REASONS))
    metadata = metadata_field()


class RefundOut(Schema):
    """The refund object (documentation of the rendered shape)."""

    id = fields.String(required=True, metadata={"example": "re_7kQ…"})
    object = fields.Constant("refund", required=True)
    payment_id = fields.String(required=True)
    amount = fields.Integer(required=True, metadata={"example": 500})
    currency = fields.String(required=True, metadata={"example": "usd"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in RefundStatus]))
    reason = fields.String(required=True, allow_none=True, validate=validate.OneOf(REFUND_REASONS))
    failure_reason = fields.String(required=True, allow_none=True)
    metadata = metadata_out()
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


def render_refund(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "payment_id": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "reason": refund.reason,
        "failure_reason": refund.failure_reason,
        "metadata": refund.meta or {},
        "created_at": rfc3339(refund.created_at),
        "updated_at": rfc3339(refund.updated_at),
    }
