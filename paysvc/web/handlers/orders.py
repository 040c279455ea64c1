"""`POST /orders/{order_id}/cancel` (service, admin): settle every payment of the order."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import Schema, fields, validate

from paysvc.orders.service import CancelledOrder
from paysvc.payments.schemas import CANCELLATION_REASONS, PaymentOut, render_payment
from paysvc.refunds.schemas import RefundOut, render_refund
from paysvc.web.io import actor, container, doc, json_response, with_body
from paysvc.web.keys import BODY

routes = web.RouteTableDef()


class OrderCancelRequest(Schema):
    reason = fields.String(validate=validate.OneOf(CANCELLATION_REASONS))


class OrderCancellationOut(Schema):
    object = fields.Constant("order_cancellation")
    order_id = fields.String()
    payments = fields.List(fields.Nested(PaymentOut))
    refunds = fields.List(fields.Nested(RefundOut))


@doc(
    tags=["orders"],
    summary="Cancel an order: release or give back every payment's money (service, admin)",
    description="pending → cancelled; authorized → voided (cancelled); captured / "
    "partially_refunded → the remainder refunded; processing → cancelled or refunded as soon "
    "as its outcome is known (background completer). Idempotent: a second call changes "
    "nothing more. Lists every payment of the order and their refunds.",
    responds=OrderCancellationOut,
)
@routes.post("/orders/{order_id}/cancel")
@with_body(OrderCancelRequest)
async def cancel_order(request: web.Request) -> web.Response:
    result = await container(request).orders.cancel(
        actor(request), request.match_info["order_id"], request[BODY].get("reason")
    )
    return json_response(render_cancellation(result))


def render_cancellation(result: CancelledOrder) -> dict[str, Any]:
    return {
        "object": "order_cancellation",
        "order_id": result.order_id,
        "payments": [render_payment(p) for p in result.payments],
        "refunds": [render_refund(r) for r in result.refunds],
    }
