"""Request schemas (validation and OpenAPI) and the payment object's rendering."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from paysvc.clock import rfc3339
from paysvc.payments.models import Payment
from paysvc.payments.states import PaymentStatus
from paysvc.schemas import (
    Currency,
    ListQueryArgs,
    StrictInt,
    amount_field,
    metadata_field,
    metadata_out,
)

CANCELLATION_REASONS = ("requested_by_customer", "duplicate", "fraudulent", "abandoned")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_return_url(value: str) -> None:
    """https anywhere, or http on this machine only (local development); nothing else."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError on a malformed port
    except ValueError:
        raise ValidationError("must be a valid URL") from None
    if not host or parts.username is not None or parts.password is not None:
        raise ValidationError("must be an absolute URL with a host and no credentials")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValidationError("must not contain whitespace or control characters")
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOCAL_HOSTS):
        return
    raise ValidationError("must be an https URL (http only on localhost)")


class CreateIntentRequest(Schema):
    order_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    amount = amount_field(required=True)
    currency = Currency(required=True, metadata={"example": "usd"})
    customer_id = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "service/admin only; customers always get their own id"},
    )
    payment_method = fields.String(validate=validate.Length(min=1, max=255))
    capture_method = fields.String(
        load_default="automatic", validate=validate.OneOf(("automatic", "manual"))
    )
    description = fields.String(validate=validate.Length(max=500))
    metadata = metadata_field()
    receipt_email = fields.Email(validate=validate.Length(max=254))


class ConfirmRequest(Schema):
    payment_method = fields.String(validate=validate.Length(min=1, max=255))
    return_url = fields.String(
        validate=[validate.Length(min=1, max=2048), check_return_url],
        metadata={
            "description": "where the customer's browser returns after 3-D Secure "
            "authentication: https (http on localhost only)",
            "example": "https://shop.example.com/checkout/done",
        },
    )


class CaptureRequest(Schema):
    amount_to_capture = StrictInt(
        validate=validate.Range(min=1),
        metadata={"description": "defaults to everything capturable; the rest is released"},
    )


class CancelRequest(Schema):
    reason = fields.String(validate=validate.OneOf(CANCELLATION_REASONS))
    refund_if_captured = fields.Boolean(
        load_default=False,
        metadata={
            "description": "service/admin only: when the payment is already captured, refund "
            "everything still refundable instead of failing with 409"
        },
    )


class PaymentListQuery(ListQueryArgs):
    order_id = fields.String()
    status = fields.String(validate=validate.OneOf([s.value for s in PaymentStatus]))


class AdminPaymentListQuery(PaymentListQuery):
    customer_id = fields.String()
    created_gte = fields.AwareDateTime(default_timezone=None)
    created_lt = fields.AwareDateTime(default_timezone=None)


class RedirectToUrlOut(Schema):
    url = fields.String(
        required=True, metadata={"description": "open it in the customer's browser"}
    )
    return_url = fields.String(required=True, allow_none=True)


class NextActionOut(Schema):
    type = fields.String(
        required=True,
        metadata={"example": "redirect_to_url", "description": "redirect_to_url or use_stripe_sdk"},
    )
    redirect_to_url = fields.Nested(RedirectToUrlOut)


class PaymentMethodOut(Schema):
    type = fields.String(required=True, metadata={"example": "card"})
    brand = fields.String(required=True, allow_none=True, metadata={"example": "visa"})
    last4 = fields.String(required=True, metadata={"example": "4242"})
    exp_month = fields.Integer(required=True, allow_none=True)
    exp_year = fields.Integer(required=True, allow_none=True)


class FailureOut(Schema):
    code = fields.String(required=True, metadata={"example": "card_declined"})
    decline_code = fields.String(
        required=True, allow_none=True, metadata={"example": "insufficient_funds"}
    )
    message = fields.String(required=True, allow_none=True)


class PaymentOut(Schema):
    """The payment object (documentation of the rendered shape)."""

    id = fields.String(required=True, metadata={"example": "pay_3xY…"})
    object = fields.Constant("payment", required=True)
    order_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    amount = fields.Integer(required=True, metadata={"example": 1999})
    amount_capturable = fields.Integer(required=True)
    amount_captured = fields.Integer(required=True)
    amount_refunded = fields.Integer(required=True)
    currency = fields.String(required=True, metadata={"example": "usd"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in PaymentStatus]))
    capture_method = fields.String(required=True, validate=validate.OneOf(("automatic", "manual")))
    payment_method = fields.Nested(PaymentMethodOut, required=True, allow_none=True)
    failure = fields.Nested(FailureOut, required=True, allow_none=True)
    cancellation_reason = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    metadata = metadata_out()
    next_action = fields.Nested(
        NextActionOut,
        required=True,
        allow_none=True,
        metadata={"description": "what the customer must do while requires_action; else null"},
    )
    disputed = fields.Boolean(required=True)
    gateway = fields.String(required=True, metadata={"example": "sandbox"})
    gateway_reference = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


def render_payment(payment: Payment) -> dict[str, Any]:
    card = None
    if payment.card_last4 is not None:
        card = {
            "type": payment.card_type or "card",
            "brand": payment.card_brand,
            "last4": payment.card_last4,
            "exp_month": payment.card_exp_month,
            "exp_year": payment.card_exp_year,
        }
    failure = None
    if payment.failure_code is not None:
        failure = {
            "code": payment.failure_code,
            "decline_code": payment.failure_decline_code,
            "message": payment.failure_message,
        }
    return {
        "id": payment.id,
        "object": "payment",
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
        "amount": payment.amount,
        "amount_capturable": payment.amount_capturable,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
        "currency": payment.currency,
        "status": payment.status,
        "capture_method": payment.capture_method,
        "payment_method": card,
        "failure": failure,
        "cancellation_reason": payment.cancellation_reason,
        "description": payment.description,
        "metadata": payment.meta or {},
        "next_action": (
            payment.next_action if payment.status == PaymentStatus.REQUIRES_ACTION else None
        ),
        "disputed": payment.disputed,
        "gateway": payment.gateway,
        "gateway_reference": payment.gateway_reference,
        "created_at": rfc3339(payment.created_at),
        "updated_at": rfc3339(payment.updated_at),
    }
