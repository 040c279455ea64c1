"""The Stripe webhook inbox: verify, store once, apply once, in one unit of work.

Every verified event is inserted with its id as primary key in the same transaction as its
effect, so a redelivery (even concurrent) finds the row and changes nothing. Effects only move
things forward (`PaymentService.apply_gateway_state`, `RefundService.apply_gateway_refund`,
dispute ranks). An event about a payment we do not know yet is kept `pending` and applied when
the payment appears: right after a confirm settles (a confirm listener) and from the background
reconciler. So is a refund event we cannot book yet (see `_apply_refund_event`).

Lock order: the inbox row (insert), then the payment row; retries lock the payment first and
re-read the event under that lock, so every application to one payment is serialized.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.disputes.service import DisputeService
from paysvc.errors import InvalidRequest, MalformedRequest
from paysvc.gateways.base import GatewayPaymentStatus
from paysvc.metrics import Metrics
from paysvc.payments.models import Payment
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.service import PaymentService
from paysvc.refunds.service import RefundService
from paysvc.webhooks.models import InboxStatus, WebhookEvent
from paysvc.webhooks.rejections import RejectionLog
from paysvc.webhooks.repository import WebhookRepository, reference_lock
from paysvc.webhooks.signature import InvalidSignature, verify_stripe_signature
from paysvc.webhooks.stripe_objects import (
    PaymentLink,
    UnusableObject,
    dispute_from_object,
    link_of,
    payment_from_intent,
    refund_from_object,
    refunds_of_charge,
)

log = logging.getLogger(__name__)
SOURCE = "stripe"
TOLERANCE_SECONDS = 300
DUPLICATE = "duplicate"
RETRY_ACTOR = Actor(id="stripe", role=Role.SERVICE, origin="webhook-inbox")

PAYMENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.amount_capturable_updated",
        "payment_intent.processing",
        "payment_intent.requires_action",
    }
)
REFUND_EVENTS = frozenset(
    {
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refund.updated",
    }
)
DISPUTE_EVENTS = frozenset(
    {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
)
HANDLED = PAYMENT_EVENTS | REFUND_EVENTS | DISPUTE_EVENTS
MONEY_TAKEN = frozenset({GatewayPaymentStatus.CAPTURED, GatewayPaymentStatus.AUTHORIZED})


class WebhookService:
    def __init__(
        self,
        db: Database,
        secrets: Sequence[str],
        clock: Clock,
        audit: AuditLog,
        payments: PaymentService,
        disputes: DisputeService,
        refunds: RefundService,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.db = db
        self.secrets = tuple(secrets)
        self.clock = clock
        self.audit = audit
        self.payments = payments
        self.disputes = disputes
        self.refunds = refunds
        self.rejections = RejectionLog(db, audit, clock)

    # -- receiving -----------------------------------------------------------------------

    async def receive(self, payload: bytes, signature: str | None, actor: Actor) -> str:
        """Verify and take in one Stripe event. Returns the inbox status it got
        (applied, pending, ignored) or "duplicate". A bad signature raises a 400 and is
        counted for the aggregated audit entry of its source (see `rejections`); nothing is
        written for it."""
        try:
            verify_stripe_signature(
                payload,
                signature,
                self.secrets,
                now=self.clock.now().timestamp(),
                tolerance=TOLERANCE_SECONDS,
            )
        except InvalidSignature as error:
            self.metrics.webhooks.labels("unverified", "invalid_signature").inc()
            self.rejections.note(actor.origin, error.reason)
            if self.rejections.due():
                await self.rejections.flush()
            raise InvalidRequest(
                f"Invalid webhook signature: {error.reason}",
                code="invalid_signature",
                http_status=400,
            ) from None
        text, event = _parse(payload)
        event_id, event_type = event["id"], event["type"]
        obj: dict[str, Any] = event["data"]["object"]
        link = link_of(obj) if event_type in HANDLED else PaymentLink(None, None)

        async def work(session: AsyncSession) -> str:
            repo = WebhookRepository(session)
            inserted = await repo.insert_if_new(
                {
                    "id": event_id,
                    "source": SOURCE,
                    "type": event_type,
                    # A Core insert (no flush): sealed here, bound to the row like any value.
                    "payload_enc": self.db.keyring.encrypt(
                        text,
                        WebhookEvent.payload.associated_for(WebhookEvent.__tablename__, event_id),
                    ),
                    "status": InboxStatus.PENDING,
                    "attempts": 0,
                    "payment_reference": link.reference,
                    "payment_id": link.payment_id,
                    "received_at": self.clock.now(),
                    "processed_at": None,
                }
            )
            if not inserted:
                return DUPLICATE
            row = await repo.get(event_id)
            assert row is not None
            status = await self._apply(session, row, obj, link, actor)
            self._finish(row, status)
            return status

        result = await self.db.run(work)
        # Stripe has hundreds of event types: label the ones we handle, the rest as "other".
        self.metrics.webhooks.labels(event_type if event_type in HANDLED else "other", result).inc()
        return result

    # -- pending events ------------------------------------------------------------------

    @staticmethod
    def waiting_for(payment: Payment) -> ColumnElement[bool]:
        """Whether events that point at this payment wait (a condition asked by a confirm's
        unit of work, which then calls `retry_for_payment` only if so)."""
        return WebhookRepository.pending_exists(payment.id, payment.gateway_reference)

    @staticmethod
    def settling(payment: Payment) -> ColumnElement[Any] | None:
        """The lock a confirm's settling unit of work takes (PostgreSQL) before it asks
        `waiting_for`, held until it commits (see `_locked_payment`)."""
        reference = payment.gateway_reference
        return None if reference is None else reference_lock(reference)

    async def retry_for_payment(self, payment_id: str) -> int:
        """Apply the pending events that point at this payment (after its confirm)."""

        async def find(session: AsyncSession) -> Sequence[str]:
            payment = await PaymentRepository(session).get(payment_id)
            if payment is None:
                return []
            return await WebhookRepository(session).pending_for(
                payment.id, payment.gateway_reference
            )

        return await self._retry_all(await self.db.run(find, write=False))

    async def retry_pending(self, limit: int = 200) -> int:
        """Apply pending events whose payment has appeared since (background reconciler)."""

        async def find(session: AsyncSession) -> Sequence[str]:
            return await WebhookRepository(session).pending_with_known_payment(limit)

        return await self._retry_all(await self.db.run(find, write=False))

    async def waiting_refund_events(self, limit: int = 200) -> Sequence[str]:
        """Refund events whose payment we know but which still wait: a refund the gateway
        made that we could not book (reconciliation reports them for a human)."""

        async def find(session: AsyncSession) -> Sequence[str]:
            return await WebhookRepository(session).pending_with_known_payment(limit, REFUND_EVENTS)

        return await self.db.run(find, write=False)

    async def waiting_payment_events(self, limit: int = 200) -> Sequence[str]:
        """Payment events about another intent of a payment we know that holds money: the
        order paid twice (reconciliation reports them for a human)."""

        async def find(session: AsyncSession) -> Sequence[str]:
            return await WebhookRepository(session).pending_about_another_intent(
                limit, PAYMENT_EVENTS
            )

        return await self.db.run(find, write=False)

    async def _retry_all(self, event_ids: Sequence[str]) -> int:
        applied = 0
        for event_id in event_ids:
            applied += await self._retry(event_id)
        return applied

    async def _retry(self, event_id: str) -> bool:
        async def work(session: AsyncSession) -> bool:
            repo = WebhookRepository(session)
            row = await repo.get(event_id)
            if row is None or row.status != InboxStatus.PENDING:
                return False
            link = PaymentLink(row.payment_reference, row.payment_id)
            if await self._locked_payment(session, link) is None:
                return False
            row = await repo.get(event_id)  # re-read under the payment's lock
            if row is None or row.status != InboxStatus.PENDING:
                return False  # another worker applied it meanwhile
            obj = json.loads(row.payload)["data"]["object"]
            status = await self._apply(session, row, obj, link, RETRY_ACTOR)
            self._finish(row, status)
            return status != InboxStatus.PENDING

        return await self.db.run(work)

    # -- applying ------------------------------------------------------------------------

    async def _apply(
        self,
        session: AsyncSession,
        row: WebhookEvent,
        obj: dict[str, Any],
        link: PaymentLink,
        actor: Actor,
    ) -> InboxStatus:
        if row.type not in HANDLED:
            return InboxStatus.IGNORED
        payment = await self._locked_payment(session, link)
        if payment is None:
            return InboxStatus.PENDING
        if (
            link.reference is not None
            and payment.gateway_reference is not None
            and link.reference != payment.gateway_reference
        ):
            # Another intent of this payment. If it holds money, the order is paid twice: kept
            # pending, reported by every reconcile run (`order_charged_twice`), never ignored.
            other = payment_from_intent(obj) if row.type in PAYMENT_EVENTS else None
            if other is not None and other.status in MONEY_TAKEN:
                log.warning(
                    "payment %s: the gateway holds %s under another intent %s; reported as "
                    "order_charged_twice",
                    payment.id,
                    other.status,
                    other.reference,
                )
                return InboxStatus.PENDING
            return InboxStatus.IGNORED  # about an earlier, abandoned intent of this payment
        try:
            if row.type in PAYMENT_EVENTS:
                truth = payment_from_intent(obj)
                if truth is not None:
                    await self.payments.apply_gateway_state(
                        session, payment, truth, actor, reason=f"webhook: {row.type}"
                    )
                return InboxStatus.APPLIED
            if row.type in DISPUTE_EVENTS:
                await self.disputes.record(session, payment, dispute_from_object(obj), actor)
                return InboxStatus.APPLIED
            return await self._apply_refund_event(session, row.type, obj, payment, actor)
        except UnusableObject as error:
            log.warning("webhook %s ignored: %s", row.id, error)
            return InboxStatus.IGNORED

    async def _apply_refund_event(
        self,
        session: AsyncSession,
        event_type: str,
        obj: dict[str, Any],
        payment: Payment,
        actor: Actor,
    ) -> InboxStatus:
        """Settle each refund the event reports, in this unit of work (`payment` is locked by
        the caller; the refund is locked after it). Forward only: a late `pending` changes
        nothing. A refund we cannot record yet (it does not fit what is refundable, or may be
        one of ours whose answer is on its way) keeps the event pending: it is retried by the
        reconciler, which reports it while it waits."""
        truths = (
            refunds_of_charge(obj) if event_type == "charge.refunded" else [refund_from_object(obj)]
        )
        waiting = False
        for truth in truths:
            if await self.refunds.apply_gateway_refund(session, payment, truth, actor) is None:
                waiting = True
        return InboxStatus.PENDING if waiting else InboxStatus.APPLIED

    async def _locked_payment(self, session: AsyncSession, link: PaymentLink) -> Payment | None:
        repo = PaymentRepository(session)
        payment = None
        if link.reference is not None:
            payment = await repo.get_by_reference(link.reference, for_update=True)
            if payment is None and link.payment_id is None and not self.db.is_sqlite:
                # A confirm may be committing this reference now (PostgreSQL), having asked
                # before our event was committed whether events wait for its payment. It holds
                # this lock from before asking until its commit: once we have the lock, either
                # it committed (the payment is found now) or it will see our pending event.
                # (An event with our payment id waits on the payment's row lock instead.)
                await session.execute(select(reference_lock(link.reference)))
                payment = await repo.get_by_reference(link.reference, for_update=True)
        if payment is None and link.payment_id is not None:
            payment = await repo.get(link.payment_id, for_update=True)
        return payment

    def _finish(self, row: WebhookEvent, status: InboxStatus) -> None:
        row.status = status
        row.attempts += 1
        if status != InboxStatus.PENDING:
            row.processed_at = self.clock.now()


def _parse(payload: bytes) -> tuple[str, dict[str, Any]]:
    """The raw text and the event; a signed body that is not a Stripe event is a 400."""
    try:
        text = payload.decode("utf-8")
        event = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise MalformedRequest("The webhook body is not valid JSON") from None
    data = event.get("data") if isinstance(event, dict) else None
    valid = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and 0 < len(event["type"]) <= 64
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )
    if not valid:
        raise MalformedRequest("The webhook body is not a Stripe event")
    return text, event
