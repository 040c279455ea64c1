"""Disputes: recorded from the gateway's reports (webhooks), listed for staff."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.db.pagination import Page
from paysvc.disputes.models import Dispute
from paysvc.disputes.repository import DisputeRepository
from paysvc.disputes.schemas import render_dispute
from paysvc.disputes.states import CLOSED, MARKS_PAYMENT, may_move
from paysvc.errors import PermissionDenied
from paysvc.ids import new_id
from paysvc.payments.models import Payment
from paysvc.payments.service import PaymentService
from paysvc.webhooks.stripe_objects import GatewayDispute


class DisputeService:
    def __init__(
        self, db: Database, payments: PaymentService, clock: Clock, audit: AuditLog
    ) -> None:
        self.db = db
        self.payments = payments
        self.clock = clock
        self.audit = audit

    async def list(
        self, actor: Actor, payment_id: str, *, limit: int, starting_after: str | None
    ) -> Page[Dispute]:
        if not actor.is_staff:
            raise PermissionDenied("Only service or admin callers may see disputes")

        async def work(session: AsyncSession) -> Page[Dispute]:
            await self.payments.load(session, actor, payment_id)
            return await DisputeRepository(session).list(
                payment_id, limit=limit, starting_after=starting_after
            )

        return await self.db.run(work, write=False)

    async def record(
        self, session: AsyncSession, payment: Payment, facts: GatewayDispute, actor: Actor
    ) -> bool:
        """Create or move forward the dispute the gateway reports, in the caller's unit of
        work, with `payment` locked by the caller. Returns True when something changed."""
        repo = DisputeRepository(session)
        now = self.clock.now()
        dispute = await repo.by_reference(facts.reference)
        if dispute is None:
            dispute = Dispute(
                id=new_id("dp"),
                payment_id=payment.id,
                gateway_reference=facts.reference,
                amount=facts.amount,
                currency=facts.currency or payment.currency,
                reason=facts.reason,
                status=facts.status,
                evidence_due_by=facts.evidence_due_by,
                created_at=now,
                updated_at=now,
            )
            repo.add(dispute)
            change = "created"
        else:
            if dispute.payment_id != payment.id or not may_move(dispute.status, facts.status):
                return False
            before = (dispute.status, dispute.amount, dispute.reason, dispute.evidence_due_by)
            after = (facts.status, facts.amount, facts.reason, facts.evidence_due_by)
            if before == after:
                return False
            dispute.status, dispute.amount, dispute.reason, dispute.evidence_due_by = after
            dispute.updated_at = now
            change = "closed" if facts.status in CLOSED else "updated"
        await session.flush()
        payment.disputed = any(s in MARKS_PAYMENT for s in await repo.statuses_of(payment.id))
        self.payments.note(
            session,
            payment,
            f"dispute.{change}",
            actor,
            reason=f"{dispute.id} {dispute.status} ({dispute.reason})",
            amount=dispute.amount,
        )
        self.audit.record(
            session,
            actor,
            f"dispute.{change}",
            "dispute",
            dispute.id,
            details={
                "payment_id": payment.id,
                "status": dispute.status,
                "reason": dispute.reason,
                "amount": dispute.amount,
                "payment_disputed": payment.disputed,
            },
        )
        self.payments.outbox.record(session, f"dispute.{change}", payment, render_dispute(dispute))
        return True
