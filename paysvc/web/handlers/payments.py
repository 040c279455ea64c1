"""Payment endpoints: parse, call one service method, render."""

from __future__ import annotations

from aiohttp import web

from paysvc.payments.repository import PaymentFilter
from paysvc.payments.schemas import (
    AdminPaymentListQuery,
    CancelRequest,
    CaptureRequest,
    ConfirmRequest,
    CreateIntentRequest,
    PaymentListQuery,
    PaymentOut,
    render_payment,
)
from paysvc.payments.service import NewIntent
from paysvc.payments.states import PaymentStatus
from paysvc.web.io import actor, container, doc, json_response, with_body, with_query
from paysvc.web.keys import BODY, QUERY
from paysvc.web.listing import list_response

routes = web.RouteTableDef()
TAG = ["payments"]


@doc(
    tags=TAG,
    summary="Create a payment intent (status pending)",
    description="customer_id: service/admin only (customers always pay for themselves). With "
    "ORDER_VALIDATION=strict the order is checked first: 422 order_not_found/order_mismatch, "
    "409 order_not_payable, 503 order_service_unavailable.",
    responds=PaymentOut,
    status=201,
    errors=(409,),
    example={"order_id": "1042", "amount": 1999, "currency": "usd"},
)
@routes.post("/payments/intents")
@with_body(CreateIntentRequest)
async def create_intent(request: web.Request) -> web.Response:
    payment = await container(request).payments.create_intent(
        actor(request),
        NewIntent(**request[BODY]),
        authorization=request.headers.get("Authorization"),
    )
    return json_response(render_payment(payment), status=201)


@doc(
    tags=TAG,
    summary="Confirm: charge (automatic) or authorize (manual) the payment",
    description="200 captured/authorized; 200 requires_action with next_action when the "
    "customer must authenticate (3-D Secure; confirm again with an empty body to settle it); "
    "402 card_error with the failed payment; 202 processing when the gateway's answer was "
    "lost; 409 order_already_paid.",
    responds=PaymentOut,
    statuses=(202,),
    errors=(402, 409, 502),
    example={"payment_method": "pm_card_visa"},
)
@routes.post("/payments/{id}/confirm")
@with_body(ConfirmRequest)
async def confirm(request: web.Request) -> web.Response:
    body = request[BODY]
    payment = await container(request).payments.confirm(
        actor(request), request.match_info["id"], body.get("payment_method"), body.get("return_url")
    )
    status = 202 if payment.status == PaymentStatus.PROCESSING else 200
    return json_response(render_payment(payment), status=status)


@doc(
    tags=TAG,
    summary="Capture an authorization, fully or partially (service, admin)",
    responds=PaymentOut,
    errors=(402, 409, 502),
    example={"amount_to_capture": 1500},
)
@routes.post("/payments/{id}/capture")
@with_body(CaptureRequest)
async def capture(request: web.Request) -> web.Response:
    payment = await container(request).payments.capture(
        actor(request), request.match_info["id"], request[BODY].get("amount_to_capture")
    )
    return json_response(render_payment(payment))


@doc(
    tags=TAG,
    summary="Cancel a payment; voids an authorization",
    description="A captured payment is 409 unless refund_if_captured (service/admin): then "
    "everything still refundable is refunded and the payment returned.",
    responds=PaymentOut,
    errors=(402, 409, 502),
    example={"reason": "requested_by_customer"},
)
@routes.post("/payments/{id}/cancel")
@with_body(CancelRequest)
async def cancel(request: web.Request) -> web.Response:
    body = request[BODY]
    payment = await container(request).payments.cancel(
        actor(request), request.match_info["id"], body.get("reason"), body["refund_if_captured"]
    )
    return json_response(render_payment(payment))


@doc(tags=TAG, summary="Retrieve a payment", responds=PaymentOut)
@routes.get("/payments/{id}")
async def get_payment(request: web.Request) -> web.Response:
    payment = await container(request).payments.get(actor(request), request.match_info["id"])
    return json_response(render_payment(payment))


@doc(tags=TAG, summary="List payments (customers see their own)", responds=PaymentOut, many=True)
@routes.get("/payments")
@with_query(PaymentListQuery)
async def list_payments(request: web.Request) -> web.Response:
    query = request[QUERY]
    return await list_response(
        request,
        container(request).payments.list,
        PaymentFilter(order_id=query.get("order_id"), status=query.get("status")),
        render_payment,
    )


@doc(tags=["admin"], summary="List all payments (admin)", responds=PaymentOut, many=True)
@routes.get("/admin/payments")
@with_query(AdminPaymentListQuery)
async def admin_list_payments(request: web.Request) -> web.Response:
    query = request[QUERY]
    return await list_response(
        request,
        container(request).payments.admin_list,
        PaymentFilter(
            customer_id=query.get("customer_id"),
            order_id=query.get("order_id"),
            status=query.get("status"),
            created_gte=query.get("created_gte"),
            created_lt=query.get("created_lt"),
        ),
        render_payment,
    )
