"""Admin use cases: the transaction report and status corrections (admins only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.admin.report import TransactionSummary, summarize
from paysvc.admin.repository import TransactionRepository
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.errors import InvalidRequest, PermissionDenied, StateConflict
from paysvc.logs import payment_id_var
from paysvc.operations.repository import OperationRepository
from paysvc.operations.states import OperationStatus
from paysvc.payments.models import Payment
from paysvc.payments.service import PaymentService, in_progress_error, order_already_paid_error
from paysvc.payments.states import LIVE, PaymentStatus, check_transition

S = PaymentStatus
DEFAULT_DAYS = 30
MAX_DAYS = 366
# Statuses only a refund may produce: amount_refunded must equal the sum of the refunds.
REFUND_STATUSES = frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED})


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    start: dt.date | None = None  # inclusive; default: 29 days before `end`
    end: dt.date | None = None  # inclusive (the whole UTC day); default: today (UTC)
    currency: str | None = None
    by_day: bool = False


class AdminService:
    def __init__(
        self, db: Database, payments: PaymentService, clock: Clock, audit: AuditLog
    ) -> None:
        self.db = db
        self.payments = payments
        self.clock = clock
        self.audit = audit

    # -- the rollup behind it ------------------------------------------------------------

    async def rebuild_rollup(self, actor: Actor) -> int:
        """Recompute the per-day rollup from the payments (audited). The triggers keep it
        exact; this is for safety (a restore, a manual edit of `payments`)."""

        async def work(session: AsyncSession) -> int:
            rows = await TransactionRepository(session).rebuild_rollup()
            self.audit.record(
                session,
                actor,
                "transactions.rollup_rebuilt",
                "report",
                None,
                details={"rows": rows},
            )
            return rows

        return await self.db.run(work)

    # -- GET /admin/transactions ---------------------------------------------------------

    async def transactions(self, actor: Actor, query: SummaryQuery) -> TransactionSummary:
        _require_admin(actor)
        start, end = self._range(query)
        created_gte = dt.datetime.combine(start, dt.time(), dt.UTC)
        created_lt = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)

        async def read(session: AsyncSession) -> TransactionSummary:
            groups = await TransactionRepository(session).groups(
                created_gte=created_gte,
                created_lt=created_lt,
                currency=query.currency,
                by_day=query.by_day,
            )
            return summarize(
                groups, start=start, end=end, currency=query.currency, by_day=query.by_day
            )

        # Aggregate in a read-only unit of work (no write lock held while scanning), then
        # audit the read; the report is only returned once its audit entry is committed.
        summary = await self.db.run(read, write=False)

        async def audit(session: AsyncSession) -> None:
            self.audit.record(
                session,
                actor,
                "transactions.summary",
                "report",
                None,
                details={
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "currency": query.currency,
                    "group_by": "day" if query.by_day else None,
                },
            )

        await self.db.run(audit)
        return summary

    def _range(self, query: SummaryQuery) -> tuple[dt.date, dt.date]:
        end = query.end or self.clock.now().astimezone(dt.UTC).date()
        start = query.start or end - dt.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise InvalidRequest("from: must not be after to", param="from")
        if (end - start).days + 1 > MAX_DAYS:
            param = "to" if query.end is not None else "from"
            raise InvalidRequest(
                f"{param}: the range may span at most {MAX_DAYS} days", param=param
            )
        return start, end

    # -- PUT /admin/payments/{id}/status -------------------------------------------------

    async def correct_status(
        self, actor: Actor, payment_id: str, target: PaymentStatus, reason: str
    ) -> Payment:
        """Record what we now believe a payment's status is (never calls the gateway): only
        transitions from the table, money fields kept consistent, historied and audited with
        the reason and the admin's id."""
        _require_admin(actor)
        payment_id_var.set(payment_id)

        async def work(session: AsyncSession) -> Payment:
            payment = await self.payments.load(session, actor, payment_id, for_update=True)
            ops = OperationRepository(session)
            for op in await ops.open_for_payment(payment.id):
                if op.status != OperationStatus.UNKNOWN:  # unknown: the human decides
                    raise in_progress_error(op.kind)
            previous = S(payment.status)
            if previous == S.REFUNDED or (previous, target) == (S.PARTIALLY_REFUNDED, S.CAPTURED):
                # Only the gateway reverses a refund (a reversal), never a correction.
                raise StateConflict(
                    f"Cannot move a payment from {previous} to {target}", param="status"
                )
            check_transition(previous, target)
            if target == S.REQUIRES_ACTION:
                raise StateConflict(
                    "requires_action comes from the gateway only (it carries the customer's "
                    "next action)",
                    param="status",
                )
            if target in REFUND_STATUSES:
                raise StateConflict(
                    "Refunded amounts change only through a refund: POST /payments/{id}/refunds",
                    code="use_refunds_endpoint",
                    param="status",
                )
            if target in LIVE and previous not in LIVE:
                if await ops.order_is_held(payment.order_id, other_than=payment.id):
                    raise order_already_paid_error()
            before = _money(payment)
            _settle_money(payment, previous, target)
            self.payments.transition(session, payment, target, actor, reason=reason)
            self.audit.record(
                session,
                actor,
                "admin.payment_status_corrected",
                "payment",
                payment.id,
                details={
                    "from": str(previous),
                    "to": str(target),
                    "reason": reason,
                    "before": before,
                    "after": _money(payment),
                },
            )
            try:
                await session.flush()
            except IntegrityError:  # the one-live-payment-per-order index, under a race
                raise order_already_paid_error() from None
            return payment

        return await self.db.run(work)


def _settle_money(payment: Payment, previous: PaymentStatus, target: PaymentStatus) -> None:
    """Money fields that agree with the corrected status (refund statuses never get here)."""
    if target == S.CAPTURED:
        payment.amount_captured = (
            payment.amount_capturable if previous == S.AUTHORIZED else payment.amount
        )
        payment.amount_capturable = 0
    elif target == S.AUTHORIZED:
        payment.amount_capturable = payment.amount
    elif target in (S.FAILED, S.CANCELLED):
        payment.amount_capturable = 0


def _money(payment: Payment) -> dict[str, Any]:
    return {
        "amount_capturable": payment.amount_capturable,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
    }


def _require_admin(actor: Actor) -> None:
    if actor.role != Role.ADMIN:
        raise PermissionDenied("Admin only")
