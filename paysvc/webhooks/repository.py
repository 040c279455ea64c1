"""All SQL about the webhook inbox."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.db.inserts import insert_if_new
from paysvc.payments.models import Payment
from paysvc.webhooks.models import InboxStatus, WebhookEvent

# pg_advisory_xact_lock(namespace, hashtext(reference)): "this gateway reference is being
# settled" (the two-int key space, apart from the audit chain's one-bigint key).
REFERENCE_LOCK_NAMESPACE = 0x70617973


def reference_lock(reference: str) -> ColumnElement[Any]:
    """PostgreSQL: a transaction-scoped lock on one gateway reference (a SELECT column)."""
    return func.pg_advisory_xact_lock(REFERENCE_LOCK_NAMESPACE, func.hashtext(reference))


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_new(self, values: dict[str, object]) -> bool:
        """Insert an inbox row unless its event id is already there. A concurrent insert of
        the same id waits for the first to commit and then inserts nothing (no error)."""
        statement = (
            insert_if_new(self.session, WebhookEvent, WebhookEvent.id)
            .values(**values)
            .returning(WebhookEvent.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def get(self, event_id: str) -> WebhookEvent | None:
        query = select(WebhookEvent).where(WebhookEvent.id == event_id)
        return (await self.session.scalars(query.execution_options(populate_existing=True))).first()

    async def pending_for(self, payment_id: str, reference: str | None) -> Sequence[str]:
        """Pending events that point at this payment, oldest first."""
        query = (
            select(WebhookEvent.id)
            .where(_pending_for(payment_id, reference))
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
        )
        return list(await self.session.scalars(query))

    @staticmethod
    def pending_exists(payment_id: str, reference: str | None) -> ColumnElement[bool]:
        """A condition: pending events point at this payment."""
        return exists().where(_pending_for(payment_id, reference))

    async def pending_about_another_intent(
        self, limit: int, types: Collection[str]
    ) -> Sequence[str]:
        """Pending events about an intent of one of our payments other than its own."""
        query = (
            select(WebhookEvent.id)
            .join(Payment, Payment.id == WebhookEvent.payment_id)
            .where(
                WebhookEvent.status == InboxStatus.PENDING,
                WebhookEvent.type.in_(sorted(types)),
                Payment.gateway_reference.is_not(None),
                Payment.gateway_reference != WebhookEvent.payment_reference,
            )
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
            .limit(limit)
        )
        return list(await self.session.scalars(query))

    async def pending_with_known_payment(
        self, limit: int, types: Collection[str] | None = None
    ) -> Sequence[str]:
        """Pending events (of these types) whose payment now exists, oldest first."""
        by_reference = exists().where(Payment.gateway_reference == WebhookEvent.payment_reference)
        by_id = exists().where(Payment.id == WebhookEvent.payment_id)
        query = select(WebhookEvent.id).where(
            WebhookEvent.status == InboxStatus.PENDING, or_(by_reference, by_id)
        )
        if types is not None:
            query = query.where(WebhookEvent.type.in_(sorted(types)))
        query = query.order_by(WebhookEvent.received_at, WebhookEvent.id).limit(limit)
        return list(await self.session.scalars(query))


def _pending_for(payment_id: str, reference: str | None) -> ColumnElement[bool]:
    match = WebhookEvent.payment_id == payment_id
    if reference is not None:
        match = or_(match, WebhookEvent.payment_reference == reference)
    return and_(WebhookEvent.status == InboxStatus.PENDING, match)
