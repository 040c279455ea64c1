"""Refund endpoints: parse, call one service method, render."""

from __future__ import annotations

from aiohttp import web

from paysvc.refunds.schemas import CreateRefundRequest, RefundOut, render_refund
from paysvc.refunds.service import NewRefund
from paysvc.schemas import ListQueryArgs
from paysvc.web.io import actor, container, doc, json_response, with_body, with_query
from paysvc.web.keys import BODY
from paysvc.web.listing import list_response

routes = web.RouteTableDef()
TAG = ["refunds"]


@doc(
    tags=TAG,
    summary="Refund a captured payment, fully or partially (service, admin)",
    description="`amount` defaults to all that remains refundable (captured minus succeeded and "
    "pending refunds); more → 422 amount_exceeds_refundable. A payment that is not captured → "
    "409. 201 with the refund `succeeded`, `failed` (the gateway refused it) or `pending` (the "
    "gateway's answer was lost; reconciliation settles it).",
    responds=RefundOut,
    status=201,
    errors=(409, 502),
    example={"amount": 500, "reason": "requested_by_customer"},
)
@routes.post("/payments/{id}/refunds")
@with_body(CreateRefundRequest)
async def create_refund(request: web.Request) -> web.Response:
    refund = await container(request).refunds.create(
        actor(request), request.match_info["id"], NewRefund(**request[BODY])
    )
    return json_response(render_refund(refund), status=201)


@doc(
    tags=TAG,
    summary="List a payment's refunds, newest first (owner, service, admin)",
    responds=RefundOut,
    many=True,
)
@routes.get("/payments/{id}/refunds")
@with_query(ListQueryArgs)
async def list_refunds(request: web.Request) -> web.Response:
    return await list_response(
        request, container(request).refunds.list, request.match_info["id"], render_refund
    )


@doc(
    tags=TAG, summary="Retrieve a refund (owner of the payment, service, admin)", responds=RefundOut
)
@routes.get("/refunds/{id}")
async def get_refund(request: web.Request) -> web.Response:
    refund = await container(request).refunds.get(actor(request), request.match_info["id"])
    return json_response(render_refund(refund))
