"""`POST /webhooks/stripe`: public (signature-verified), raw body in, one service call.

Failed verifications are limited per client IP (`FAILED_VERIFICATIONS`: a burst of 20, then one
a second): past that, a bad signature gets 429 with `Retry-After` instead of 400. A valid
signature is never limited, whatever failed before from the same address (Stripe's retries
must always get through), so the signature is always checked first.
"""

from __future__ import annotations

from aiohttp import web
from marshmallow import Schema, fields

from paysvc.auth.principal import Actor, Role
from paysvc.errors import InvalidRequest, RateLimited
from paysvc.web.io import container, doc, json_response
from paysvc.web.keys import REQUEST_ID
from paysvc.web.ratelimit import TokenBuckets, retry_after

routes = web.RouteTableDef()
FAILED_VERIFICATIONS = web.AppKey("webhook_failed_verifications", TokenBuckets)
FAILURE_BURST = 20
FAILURES_PER_SECOND = 1.0


def failure_buckets() -> TokenBuckets:
    return TokenBuckets(FAILURES_PER_SECOND, FAILURE_BURST)


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
    "or stale — nothing changes then; 429 once a client address has sent too many of those.",
    responds=WebhookReceivedOut,
    errors=(400, 413, 429),
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
    try:
        status = await container(request).webhooks.receive(
            payload, request.headers.get("Stripe-Signature"), stripe
        )
    except InvalidRequest as refused:
        if refused.code == "invalid_signature":
            wait = request.app[FAILED_VERIFICATIONS].take(stripe.origin)
            if wait is not None:
                raise RateLimited(
                    "Too many webhook deliveries with a bad signature from this address",
                    retry_after=retry_after(wait),
                ) from None
        raise
    return json_response({"received": True, "status": status})
