"""Writing events in the caller's transaction (the outbox), one delivery per destination.

Types, destinations and routing are the contract's ("Outgoing events"). `on_commit` (set by the
app to the dispatcher's `wake`) is called after a transaction that wrote events commits, so
they go out at once; a rolled-back transaction leaves no event and wakes nobody.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.clock import Clock
from paysvc.db.staged import stage
from paysvc.events.models import Event, EventDelivery
from paysvc.ids import new_id
from paysvc.metrics import after_commit
from paysvc.payments.models import Payment

# Status → event type. `requires_action` (3-D Secure) is here so that it just works.
PAYMENT_EVENT_TYPES = {
    status: f"payment.{status}"
    for status in (
        "requires_action",
        "processing",
        "authorized",
        "captured",
        "failed",
        "cancelled",
        "partially_refunded",
        "refunded",
    )
}
EVENT_TYPES = frozenset(
    {
        "payment.created",
        *PAYMENT_EVENT_TYPES.values(),
        "refund.created",
        "refund.succeeded",
        "refund.failed",
        "dispute.created",
        "dispute.updated",
        "dispute.closed",
    }
)
NOTIFIED = frozenset(
    {
        "payment.captured",
        "payment.failed",
        "payment.refunded",
        "payment.partially_refunded",
        "refund.failed",
        "dispute.created",
    }
)
ORDER_STATUS = frozenset({"payment.authorized", "payment.captured"})
GIVE_UP_AFTER = dt.timedelta(days=3)


def routes(event_type: str, enabled: Iterable[str]) -> list[str]:
    """The destinations (of those enabled) that get an event of this type."""
    wanted = {
        "order": event_type.startswith(("payment.", "refund.")),
        "notification": event_type in NOTIFIED,
        "order-status": event_type in ORDER_STATUS,
    }
    return [name for name in enabled if wanted.get(name)]


def enabled_destinations(configured: Iterable[str], notification_url: str | None) -> list[str]:
    """`EVENTS_DESTINATIONS`, less `notification` while NOTIFICATION_SERVICE_URL is unset."""
    return [d for d in configured if d != "notification" or notification_url is not None]


class Outbox:
    def __init__(self, clock: Clock, destinations: Iterable[str]) -> None:
        self.clock = clock
        self.destinations = list(destinations)
        self.on_commit: Callable[[], None] | None = None

    def record(
        self, session: AsyncSession, event_type: str, payment: Payment, data: dict[str, Any]
    ) -> Event:
        """Add the event (carrying `data`, the object as the API renders it now) and its
        deliveries to the caller's unit of work."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        now = self.clock.now()
        event = Event(
            id=new_id("evt"),
            type=event_type,
            payment_id=payment.id,
            order_id=payment.order_id,
            customer_id=payment.customer_id,
            data=data,
            receipt_email=payment.receipt_email,
            created_at=now,
        )
        stage(session, event)
        for destination in routes(event_type, self.destinations):
            stage(
                session,
                EventDelivery(
                    event_id=event.id,
                    payment_id=payment.id,
                    destination=destination,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    give_up_at=now + GIVE_UP_AFTER,
                ),
            )
        self.wake_after_commit(session)
        return event

    def wake_after_commit(self, session: AsyncSession) -> None:
        """Wake the dispatcher once the caller's unit of work commits (not if it rolls back)."""
        if self.on_commit is not None:
            after_commit(session, self.on_commit, once=True)
