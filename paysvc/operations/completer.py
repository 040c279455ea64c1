"""The one completer: finishes every operation left `pending` (a crash, a lost answer, a call
in flight past its deadline), for the background pass of every instance, for
`paysvc reconcile` and for an idempotent retry that re-attaches to its first attempt.

For each operation due (`next_check_at` passed), holding no lock while it asks:
1. look it up at the gateway; a definitive answer settles it (`PaymentService.settle_operation`);
2. no answer, inside the gateway's idempotency window: re-send it under its own key (never a
   new one), and settle whatever that says;
3. no answer past the window: `unknown` — reported by every reconcile run, never re-sent. A
   definitive answer that comes later (lookup, webhook) is still applied.

A charge waiting for the customer (`requires_action`, 3-D Secure) is never re-sent: it is looked
up on a schedule that backs off (`Ledger.action_check_delay`) until the gateway decides it;
abandoned after a day, its payment is cancelled (the gateway's intent too) and the order released.

Each operation is settled in units of work of its own; an error on one is reported with its id
and the pass goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import Clock, as_utc
from paysvc.db.engine import Database
from paysvc.errors import CardError, GatewayUnavailableError, PaysvcError
from paysvc.gateways.base import (
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
)
from paysvc.operations import metrics
from paysvc.operations.models import Operation
from paysvc.operations.repository import OperationRepository
from paysvc.operations.service import Call, Ledger, Outcome, classify
from paysvc.operations.states import CONFIRMS, OperationKind, OperationStatus
from paysvc.payments.models import Payment
from paysvc.payments.repository import PaymentRepository
from paysvc.payments.schemas import render_payment
from paysvc.payments.service import PaymentService
from paysvc.payments.states import PaymentStatus
from paysvc.refunds.repository import RefundRepository
from paysvc.refunds.schemas import render_refund

K = OperationKind
OS = OperationStatus
log = logging.getLogger(__name__)
BATCH = 200
WAITING = "waiting for the customer"  # 3-D Secure: not decided yet
AUTHENTICATED = "authentication settled by lookup"


@dataclass(frozen=True, slots=True)
class Completion:
    operation_id: str
    payment_id: str
    refund_id: str | None
    kind: str
    status: str  # the operation's status afterwards
    action: str  # what was (or, without apply, would be) done


@dataclass
class CompleterReport:
    completed: list[Completion] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Completer:
    def __init__(
        self, db: Database, ledger: Ledger, payments: PaymentService, clock: Clock
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.payments = payments
        self.clock = clock

    async def run(
        self,
        *,
        apply: bool = True,
        actor: Actor = SYSTEM,
        every_pending: bool = False,
        resend_after: dt.timedelta = dt.timedelta(),
        limit: int = BATCH,
    ) -> CompleterReport:
        """One pass over the pending operations that are due (`every_pending`: all of them;
        those not due are only looked up, never re-sent); re-sends only operations at least
        `resend_after` old. Without `apply`: what would be done, changing nothing. Updates
        the ledger's gauges."""
        report = CompleterReport()

        async def due(session: AsyncSession) -> list[str]:
            before = None if every_pending else self.clock.now()
            return list(await OperationRepository(session).due(before, limit=limit))

        for op_id in await self.db.run(due, write=False):
            try:
                report.completed.append(
                    await self.complete(op_id, apply=apply, actor=actor, resend_after=resend_after)
                )
            except Exception as error:  # reported with its id; the pass goes on
                log.warning("completing %s failed: %s", op_id, error, exc_info=True)
                report.errors.append(f"{op_id}: {type(error).__name__}: {error}"[:300])
        await self.update_metrics()
        return report

    async def complete(
        self,
        op_id: str,
        *,
        apply: bool = True,
        force: bool = False,
        actor: Actor = SYSTEM,
        resend_after: dt.timedelta = dt.timedelta(),
    ) -> Completion:
        """Finish one operation (see the module doc). `force`: do not wait for its next
        check (an idempotent retry re-attaching to it); `resend_after`: re-send it only once
        it is that old (the background pass leaves fresher ones to lookups)."""
        op, call = await self.db.run(lambda session: self._read(session, op_id), write=False)

        def done(status: str, action: str) -> Completion:
            return Completion(op.id, op.payment_id, op.refund_id, op.kind, str(status), action)

        now = self.clock.now()
        due = force or op.next_check_at is None or as_utc(op.next_check_at) <= now
        if op.status == OS.REQUIRES_ACTION:
            return await self._check_action(op, call, apply=apply, actor=actor, due=due)
        if op.status not in (OS.PENDING, OS.UNKNOWN):
            return done(op.status, "already settled")
        try:  # a lookup never hurts, due or not
            found = await self.ledger.lookup(call)
        except GatewayError as error:
            if apply and due:
                await self._postpone(op_id, f"lookup failed: {error}")
            raise
        if found is not None and self._decides(op.kind, found):
            if not apply:
                return done(op.status, f"settle: the gateway reports {_status_of(found)}")
            settled, changed = await self._settle(op_id, found, actor, reason="completed by lookup")
            if not changed:
                return done(settled.status, "settled meanwhile")
            return done(settled.status, f"settled by lookup: {_status_of(found)}")
        if op.status == OS.PENDING and not due:
            return done(op.status, "not due yet")
        if found is not None and self._undecided(found):
            if apply:
                await self._postpone(op_id, f"the gateway has not decided: {_status_of(found)}")
            return done(op.status, "the gateway has not decided yet")
        if op.attempts == 0:
            return done(op.status, "made at the gateway, not by us: no answer; check manually")
        if op.status == OS.UNKNOWN:
            return done(op.status, "no answer past the idempotency window: check manually")
        if self.ledger.past_window(op):
            if apply:
                await self.db.run(lambda session: self._give_up(session, op_id))
            return done(OS.UNKNOWN, "no answer past the idempotency window: marked unknown")
        if now - as_utc(op.created_at) < resend_after:
            if apply:
                await self._postpone(op_id, "no answer yet")
            return done(op.status, "no answer yet")
        if not apply:
            return done(op.status, "re-send under the same idempotency key")
        resend = await self.db.run(lambda session: self._begin_resend(session, op_id))
        if resend is None:
            return done(op.status, "settled meanwhile")
        outcome = await self.ledger.send(resend)
        settled, _ = await self._settle(op_id, outcome, actor, reason="completed by re-send")
        return done(settled.status, f"re-sent under the same key (attempt {resend.attempts})")

    async def _check_action(
        self, op: Operation, call: Call, *, apply: bool, actor: Actor, due: bool
    ) -> Completion:
        """A charge waiting for the customer: settle it once the gateway decided; cancel the
        payment when the customer walked away; else ask again later (backing off)."""

        def done(status: str, action: str) -> Completion:
            return Completion(op.id, op.payment_id, op.refund_id, op.kind, str(status), action)

        if not due:
            return done(op.status, WAITING)
        try:
            found = await self.ledger.lookup(call)
        except GatewayError:
            if apply:
                await self._postpone_action(op.id)
            raise
        if found is not None and classify(op.kind, found) not in (OS.PENDING, OS.REQUIRES_ACTION):
            if not apply:
                return done(op.status, f"settle: the gateway reports {_status_of(found)}")
            settled, applied = await self._settle(
                op.id, found, actor, reason="authentication settled"
            )
            return done(settled.status, AUTHENTICATED if applied else "settled meanwhile")
        if self.ledger.abandoned(op):
            if not apply:
                return done(op.status, "abandoned by the customer: cancel the payment")
            payment = await self.payments.abandon(actor, op.payment_id)
            return done(OS.FAILED, f"abandoned by the customer: payment {payment.status}")
        if apply:
            await self._postpone_action(op.id)
        return done(op.status, WAITING)

    async def _postpone_action(self, op_id: str) -> None:
        async def work(session: AsyncSession) -> None:
            op, _ = await self._locked(session, op_id)
            if op.status == OS.REQUIRES_ACTION:
                op.next_check_at = self.clock.now() + self.ledger.action_check_delay(op)

        await self.db.run(work)

    async def update_metrics(self) -> None:
        async def work(session: AsyncSession) -> None:
            stats = await OperationRepository(session).stats()
            metrics.OPERATIONS_PENDING.set(stats.pending)
            metrics.OPERATIONS_UNKNOWN.set(stats.unknown)
            oldest = stats.oldest_open
            age = 0.0 if oldest is None else (self.clock.now() - as_utc(oldest)).total_seconds()
            metrics.OLDEST_OPEN_AGE.set(max(age, 0.0))

        await self.db.run(work, write=False)

    async def charged_twice(self, *, limit: int = BATCH) -> list[tuple[Operation, Payment]]:
        async def work(session: AsyncSession) -> list[tuple[Operation, Payment]]:
            return list(await OperationRepository(session).charged_twice(limit=limit))

        return await self.db.run(work, write=False)

    async def unknown(self, *, limit: int = BATCH) -> list[Operation]:
        async def work(session: AsyncSession) -> list[Operation]:
            return list(await OperationRepository(session).with_status(OS.UNKNOWN, limit=limit))

        return await self.db.run(work, write=False)

    # -- idempotent retries --------------------------------------------------------------

    async def resume(self, resource_id: str, path: str) -> tuple[int, dict[str, Any]] | None:
        """The answer for a retry re-attaching to what its first attempt created: the status
        and body a first success would have given, or None while it is unresolved."""
        if not resource_id.startswith("op_"):
            payment = await self.payments.get(SYSTEM, resource_id)
            return (201 if path.endswith("/intents") else 200), render_payment(payment)
        try:
            await self.complete(resource_id, force=True)
        except Exception:
            log.warning("could not complete %s for a retry", resource_id, exc_info=True)
            return None
        return await self.db.run(lambda s: self._answer(s, resource_id, path), write=False)

    async def _answer(
        self, session: AsyncSession, op_id: str, path: str
    ) -> tuple[int, dict[str, Any]] | None:
        op = await OperationRepository(session).get(op_id)
        if op is None or op.status in (OS.PENDING, OS.UNKNOWN):
            return None
        payment = await PaymentRepository(session).get(op.payment_id)
        assert payment is not None  # foreign key
        rendered = render_payment(payment)
        if op.status == OS.REQUIRES_ACTION:  # what the first confirm answered
            return 200, rendered
        if op.kind == K.REFUND and not path.endswith("/cancel"):
            refund = await RefundRepository(session).get(str(op.refund_id))
            assert refund is not None  # foreign key
            if refund.failure_reason == "gateway_unavailable":
                return _error(GatewayUnavailableError("The payment gateway is unavailable"))
            return 201, render_refund(refund)
        if op.status == OS.SUCCEEDED:
            status = 202 if payment.status == PaymentStatus.PROCESSING else 200
            return status, rendered
        if op.kind in CONFIRMS and payment.status == PaymentStatus.FAILED:
            return _error(
                CardError(
                    payment.failure_message or "Your card was declined.",
                    code=payment.failure_code or "card_declined",
                    extra={"decline_code": payment.failure_decline_code, "payment": rendered},
                )
            )
        if op.kind == K.REFUND:
            return _error(
                CardError(
                    "The gateway refused the refund",
                    code="refund_failed",
                    extra={"decline_code": None, "payment": rendered},
                )
            )
        return _error(GatewayUnavailableError(f"The gateway did not {op.kind}: {op.last_error}"))

    # -- units of work -------------------------------------------------------------------

    async def _read(self, session: AsyncSession, op_id: str) -> tuple[Operation, Call]:
        ops = OperationRepository(session)
        op = await ops.get(op_id)
        if op is None:
            raise LookupError(f"no operation {op_id}")
        payment = await PaymentRepository(session).get(op.payment_id)
        assert payment is not None  # foreign key
        others = frozenset(
            o.gateway_reference
            for o in await ops.for_payment(payment.id)
            if o.id != op.id and o.gateway_reference
        )
        reason = None
        if op.refund_id is not None:
            refund = await RefundRepository(session).get(op.refund_id)
            reason = refund.reason if refund is not None else None
        return op, self.ledger.call_for(payment, op, reason=reason, other_references=others)

    async def _settle(
        self, op_id: str, outcome: Outcome, actor: Actor, *, reason: str
    ) -> tuple[Operation, bool]:
        """Settle under the payment's lock; False when someone else settled it first."""

        async def work(session: AsyncSession) -> tuple[Operation, bool]:
            locked, _ = await self._locked(session, op_id)
            if locked.status not in (OS.PENDING, OS.REQUIRES_ACTION, OS.UNKNOWN):
                return locked, False
            _, op = await self.payments.settle_operation(
                session, op_id, outcome, actor, reason=reason
            )
            if op.status == OS.PENDING:  # still undecided: ask again after the stale window
                op.next_check_at = self.clock.now() + self.ledger.timing.operation_stale
            return op, True

        return await self.db.run(work)

    async def _begin_resend(self, session: AsyncSession, op_id: str) -> Call | None:
        op, _ = await self._locked(session, op_id)
        if op.status != OS.PENDING:
            return None
        now = self.clock.now()
        if op.next_check_at is not None and as_utc(op.next_check_at) > now:
            return None  # another completer is re-sending it right now
        op.attempts += 1
        op.next_check_at = now + self.ledger.timing.operation_stale
        op.updated_at = now
        _, call = await self._read(session, op_id)
        return call

    async def _give_up(self, session: AsyncSession, op_id: str) -> None:
        op, payment_id = await self._locked(session, op_id)
        if op.status != OS.PENDING:
            return
        self.ledger.move(op, OS.UNKNOWN, error="no answer inside the gateway's idempotency window")
        log.warning(
            "operation %s (%s of payment %s) has no answer past the gateway's idempotency "
            "window: unknown, never re-sent; check it with the gateway",
            op.id,
            op.kind,
            payment_id,
        )

    async def _postpone(self, op_id: str, why: str) -> None:
        async def work(session: AsyncSession) -> None:
            op, _ = await self._locked(session, op_id)
            if op.status == OS.PENDING:
                op.last_error = why[:500]
                op.next_check_at = self.clock.now() + self.ledger.timing.operation_stale
                op.updated_at = self.clock.now()

        await self.db.run(work)

    async def _locked(self, session: AsyncSession, op_id: str) -> tuple[Operation, str]:
        """Lock the operation's payment, then the operation (the fixed order)."""
        ops = OperationRepository(session)
        found = await ops.get(op_id)
        if found is None:
            raise LookupError(f"no operation {op_id}")
        await PaymentRepository(session).get(found.payment_id, for_update=True)
        op = await ops.get(op_id, for_update=True)
        assert op is not None  # operations are never deleted
        return op, found.payment_id

    @staticmethod
    def _decides(kind: str, found: GatewayPayment | GatewayRefund | GatewayError) -> bool:
        return classify(kind, found) != OS.PENDING

    @staticmethod
    def _undecided(found: GatewayPayment | GatewayRefund | GatewayError) -> bool:
        """The gateway holds the operation but has not decided it (do not re-send)."""
        if isinstance(found, GatewayRefund):
            return found.status == GatewayRefundStatus.PENDING
        return isinstance(found, GatewayPayment) and found.status == GatewayPaymentStatus.PROCESSING


def _status_of(found: GatewayPayment | GatewayRefund | GatewayError) -> str:
    return str(found.status) if isinstance(found, GatewayPayment | GatewayRefund) else "error"


def _error(error: PaysvcError) -> tuple[int, dict[str, Any]]:
    return error.http_status, {"error": error.body()}
