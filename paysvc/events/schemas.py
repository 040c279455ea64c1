"""The outgoing event object as admins see it (envelope plus delivery state), and its query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marshmallow import Schema, fields, validate

from paysvc.clock import rfc3339
from paysvc.config import EVENT_DESTINATIONS
from paysvc.events.dispatcher import envelope
from paysvc.events.models import Event, EventDelivery
from paysvc.events.outbox import EVENT_TYPES
from paysvc.schemas import ListQueryArgs

DELIVERY_STATUSES = ("pending", "delivered", "failed", "dead")


class EventListQuery(ListQueryArgs):
    type = fields.String(validate=validate.OneOf(sorted(EVENT_TYPES)))
    status = fields.String(
        validate=validate.OneOf(DELIVERY_STATUSES),
        metadata={"description": "events with a delivery in this status"},
    )
    payment_id = fields.String(validate=validate.Length(min=1, max=64))
    destination = fields.String(validate=validate.OneOf(EVENT_DESTINATIONS))


class DeliveryOut(Schema):
    destination = fields.String(metadata={"example": "order"})
    status = fields.String(metadata={"example": "delivered"})
    attempts = fields.Integer()
    next_attempt_at = fields.String(allow_none=True)
    last_attempt_at = fields.String(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    delivered_at = fields.String(allow_none=True)


class EventOut(Schema):
    """An outgoing event (documentation of the rendered shape)."""

    id = fields.String(metadata={"example": "evt_3xY…"})
    object = fields.Constant("event")
    type = fields.String(metadata={"example": "payment.captured"})
    created_at = fields.String()
    payment_id = fields.String()
    order_id = fields.String()
    customer_id = fields.String()
    data = fields.Dict(metadata={"description": '{"object": <payment | refund | dispute>}'})
    deliveries = fields.List(fields.Nested(DeliveryOut))


class RedeliverOut(Schema):
    id = fields.String()
    object = fields.Constant("event_redelivery")
    queued = fields.Integer(metadata={"description": "deliveries queued again"})


def render_delivery(delivery: EventDelivery) -> dict[str, Any]:
    pending = delivery.status == "pending"
    return {
        "destination": delivery.destination,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": rfc3339(delivery.next_attempt_at) if pending else None,
        "last_attempt_at": _time(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": _time(delivery.delivered_at),
    }


def render_event(event: Event, deliveries: Sequence[EventDelivery]) -> dict[str, Any]:
    return {**envelope(event), "deliveries": [render_delivery(d) for d in deliveries]}


def _time(value: Any) -> str | None:
    return None if value is None else rfc3339(value)
