"""The operation as the contract renders it."""

from __future__ import annotations

from typing import Any

from paysvc.clock import rfc3339
from paysvc.operations.models import Operation


def render_operation(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "object": "operation",
        "payment_id": op.payment_id,
        "kind": op.kind,
        "amount": op.amount,
        "currency": op.currency,
        "status": op.status,
        "attempts": op.attempts,
        "gateway": op.gateway,
        "gateway_reference": op.gateway_reference,
        "refund_id": op.refund_id,
        "last_error": op.last_error,
        "next_check_at": rfc3339(op.next_check_at),
        "created_at": rfc3339(op.created_at),
        "updated_at": rfc3339(op.updated_at),
    }
