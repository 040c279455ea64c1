"""The dispute object's rendering and its OpenAPI description."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from paysvc.clock import rfc3339
from paysvc.disputes.models import Dispute


class DisputeOut(Schema):
    id = fields.String(required=True, metadata={"example": "dp_…"})
    object = fields.Constant("dispute", required=True)
    payment_id = fields.String(required=True)
    amount = fields.Integer(required=True)
    currency = fields.String(required=True)
    reason = fields.String(required=True)
    status = fields.String(
        required=True,
        metadata={"description": "as Stripe: needs_response, under_review, won, lost, …"},
    )
    evidence_due_by = fields.DateTime(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)


def render_dispute(dispute: Dispute) -> dict[str, Any]:
    return {
        "id": dispute.id,
        "object": "dispute",
        "payment_id": dispute.payment_id,
        "amount": dispute.amount,
        "currency": dispute.currency,
        "reason": dispute.reason,
        "status": dispute.status,
        "evidence_due_by": rfc3339(dispute.evidence_due_by),
        "created_at": rfc3339(dispute.created_at),
    }
