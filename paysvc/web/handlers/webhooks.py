"""`POST /webhooks/stripe`: public (signature-verified), raw body in, one service call."""

from __future__ import annotations

from aiohttp import web
from marshmallow import Schema, fields

from paysvc.auth.principal import Actor, Role
from paysvc.web.io import container, doc, json_response
from paysvc.web.keys import REQUEST_ID

routes = web.RouteTableDef()


class WebhookReceivedOut(Schema):
    received = fields.Boolean(required=True)
    status = fields.String(
        required=True, metadata={"description": "applied, pending, ignored or duplicate"}
    )


@doc(
    tags=["webhooks"],
    summary="Receive a Stripe event (verified with Stripe-Signature)",
    description="200 once the event is stored (applied, pending until its payment appears, "
    "ignored, or a duplicate); 400 invalid_signature when the signature is missing, wrong "
    "or stale — nothing changes then.",
    responds=WebhookReceivedOut,
    errors=(400, 413),
)
@routes.post("/webhooks/stripe")
async def stripe_webhook(request: web.Request) -> web.Response:
    payload = await request.read()  # the raw bytes are what is signed; ≤ 64 KiB (else 413)
    stripe = Actor(
        id="stripe",
        role=Role.SERVICE,
        origin=request.remote or "unknown",
        request_id=request.get(REQUEST_ID),
    )
    status = await container(request).webhooks.receive(
        payload, request.headers.get("Stripe-Signature"), stripe
    )
    return json_response({"received": True, "status": status})
