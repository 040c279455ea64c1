"""`GET /admin/transactions`, `GET /admin/report.svg` and `PUT /admin/payments/{id}/status`
(admin only)."""

from __future__ import annotations

from aiohttp import web

from paysvc.admin.chart import render_svg
from paysvc.admin.schemas import (
    DEFINITIONS,
    StatusCorrectionRequest,
    TransactionQuery,
    TransactionSummaryOut,
    render_summary,
)
from paysvc.admin.service import SummaryQuery
from paysvc.operations.schemas import render_operation
from paysvc.payments.schemas import PaymentOut, render_payment
from paysvc.payments.states import PaymentStatus
from paysvc.web.io import actor, container, doc, json_response, list_body, with_body, with_query
from paysvc.web.keys import BODY, QUERY

routes = web.RouteTableDef()
TAG = ["admin"]


@doc(
    tags=TAG,
    summary="Transaction totals per currency, by status and by day (admin)",
    description=DEFINITIONS,
    responds=TransactionSummaryOut,
)
@routes.get("/admin/transactions")
@with_query(TransactionQuery)
async def transactions(request: web.Request) -> web.Response:
    query = request[QUERY]
    summary = await container(request).admin.transactions(
        actor(request),
        SummaryQuery(
            start=query.get("start"),
            end=query.get("end"),
            currency=query.get("currency"),
            by_day=query.get("group_by") == "day",
        ),
    )
    return json_response(render_summary(summary))


@doc(
    tags=TAG,
    summary="The transaction report per day as an SVG chart (admin)",
    description="Volume, captured and refunded per currency and day (bars) and the success rate "
    "(line), for payments created `from`..`to` (as `/admin/transactions?group_by=day`). "
    "`image/svg+xml`, no external assets.",
)
@routes.get("/admin/report.svg")
@with_query(TransactionQuery)
async def report_svg(request: web.Request) -> web.Response:
    query = request[QUERY]
    summary = await container(request).admin.transactions(
        actor(request),
        SummaryQuery(
            start=query.get("start"),
            end=query.get("end"),
            currency=query.get("currency"),
            by_day=True,
        ),
    )
    return web.Response(text=render_svg(summary), content_type="image/svg+xml")


@doc(
    tags=TAG,
    summary="A payment's gateway operations, oldest first (admin)",
    description="The money ledger: one operation per gateway call (authorize, charge, capture, "
    "void, refund), its status (pending, requires_action, succeeded, failed, unknown), attempts "
    "and last error.",
)
@routes.get("/admin/payments/{id}/operations")
async def payment_operations(request: web.Request) -> web.Response:
    operations = await container(request).payments.operations(
        actor(request), request.match_info["id"]
    )
    return json_response(list_body([render_operation(op) for op in operations], False))


@doc(
    tags=TAG,
    summary="Correct a payment's status (admin); never calls the gateway",
    description="Only transitions from the state table (else 409 state_conflict). Money "
    "fields follow: captured sets amount_captured (= amount, or = amount_capturable from "
    "authorized) and capturable 0; authorized sets capturable = amount; failed/cancelled set "
    "capturable 0. partially_refunded/refunded → 409 use_refunds_endpoint; a gateway "
    "operation in flight → 409 operation_in_progress. Historied and audited with the reason "
    "and the admin's id.",
    responds=PaymentOut,
    errors=(409,),
    example={"status": "captured", "reason": "bank confirms, ticket 4711"},
)
@routes.put("/admin/payments/{id}/status")
@with_body(StatusCorrectionRequest)
async def correct_status(request: web.Request) -> web.Response:
    body = request[BODY]
    payment = await container(request).admin.correct_status(
        actor(request), request.match_info["id"], PaymentStatus(body["status"]), body["reason"]
    )
    return json_response(render_payment(payment))
