"""The embedded sandbox gateway: Stripe test-mode tokens, with a durable ledger of its own.

The ledger lives in its own tables and is written in its own transactions, as if it were a
remote system: a lost answer (`pm_card_timeout`) leaves the truth here for reconciliation.
Idempotency keys are honoured like Stripe's: the same key returns the first result.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import BigInteger, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.clock import Clock
from paysvc.db.base import Base, UTCDateTime
from paysvc.db.engine import Database
from paysvc.gateways.base import (
    STRIPE_IDEMPOTENCY_WINDOW,
    CardDeclined,
    CardDetails,
    ChargeRequest,
    Decline,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
    RefundRequest,
)


class SandboxCharge(Base):
    __tablename__ = "sandbox_charges"

    reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    payment_method: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    amount_capturable: Mapped[int] = mapped_column(BigInteger)
    amount_captured: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    decline_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SandboxRefund(Base):
    __tablename__ = "sandbox_refunds"

    reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    refund_id: Mapped[str] = mapped_column(String(40), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    charge_reference: Mapped[str] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class _Card:
    brand: str
    last4: str
    decline: Decline | None = None
    timeout: bool = False
    refund_fails: bool = False


def _declined(code: str, decline_code: str | None, message: str) -> Decline:
    return Decline(code=code, decline_code=decline_code, message=message)


CARDS: dict[str, _Card] = {
    "pm_card_visa": _Card("visa", "4242"),
    "pm_card_mastercard": _Card("mastercard", "4444"),
    "pm_card_chargeDeclined": _Card(
        "visa", "0002", _declined("card_declined", "generic_decline", "Your card was declined.")
    ),
    "pm_card_chargeDeclinedInsufficientFunds": _Card(
        "visa",
        "9995",
        _declined("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_chargeDeclinedExpiredCard": _Card(
        "visa", "0069", _declined("expired_card", "expired_card", "Your card has expired.")
    ),
    "pm_card_timeout": _Card("visa", "0077", timeout=True),
    "pm_card_refundFail": _Card("visa", "5100", refund_fails=True),
}
EXP_MONTH, EXP_YEAR = 12, 2034


class SandboxGateway:
    name = "sandbox"
    idempotency_window = STRIPE_IDEMPOTENCY_WINDOW

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        card = CARDS.get(request.payment_method)
        if card is None:
            raise InvalidPaymentMethod(f"No such payment method: {request.payment_method!r}")

        async def work(session: AsyncSession) -> SandboxCharge:
            existing = await session.scalar(
                select(SandboxCharge).where(
                    SandboxCharge.idempotency_key == request.idempotency_key
                )
            )
            if existing is not None:
                return existing
            manual = request.capture_method == "manual"
            ok = card.decline is None
            charge = SandboxCharge(
                reference="pi_sbx_" + secrets.token_hex(12),
                payment_id=request.payment_id,
                idempotency_key=request.idempotency_key,
                payment_method=request.payment_method,
                amount=request.amount,
                currency=request.currency,
                status=(
                    GatewayPaymentStatus.FAILED
                    if not ok
                    else GatewayPaymentStatus.AUTHORIZED
                    if manual
                    else GatewayPaymentStatus.CAPTURED
                ),
                amount_capturable=request.amount if ok and manual else 0,
                amount_captured=request.amount if ok and not manual else 0,
                decline_code=card.decline.decline_code if card.decline else None,
                created_at=self.clock.now(),
            )
            session.add(charge)
            return charge

        charge = await self.database.run(work)
        if card.timeout:
            raise OutcomeUnknown("sandbox: the answer was lost (pm_card_timeout)")
        payment = _to_payment(charge)
        if card.decline is not None:
            raise CardDeclined(card.decline, payment)
        return payment

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        async def work(session: AsyncSession) -> SandboxCharge:
            charge = await self._charge(session, reference)
            if charge.status == GatewayPaymentStatus.CAPTURED and charge.amount_capturable == 0:
                return charge  # a retried capture returns the first result
            if charge.status != GatewayPaymentStatus.AUTHORIZED:
                raise GatewayRejected(f"sandbox: cannot capture a {charge.status} payment")
            if not 0 < amount <= charge.amount_capturable:
                raise GatewayRejected("sandbox: amount_to_capture exceeds the capturable amount")
            charge.status = GatewayPaymentStatus.CAPTURED
            charge.amount_captured = amount
            charge.amount_capturable = 0
            return charge

        return _to_payment(await self.database.run(work))

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        async def work(session: AsyncSession) -> SandboxCharge:
            charge = await self._charge(session, reference)
            if charge.status == GatewayPaymentStatus.CANCELED:
                return charge
            if charge.status != GatewayPaymentStatus.AUTHORIZED:
                raise GatewayRejected(f"sandbox: cannot cancel a {charge.status} payment")
            charge.status = GatewayPaymentStatus.CANCELED
            charge.amount_capturable = 0
            return charge

        return _to_payment(await self.database.run(work))

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        async def work(session: AsyncSession) -> SandboxRefund:
            existing = await session.scalar(
                select(SandboxRefund).where(
                    SandboxRefund.idempotency_key == request.idempotency_key
                )
            )
            if existing is not None:
                return existing
            # Row lock: concurrent refunds of one charge must not lose updates (PostgreSQL).
            charge = await self._charge(session, request.payment_reference, for_update=True)
            if charge.status != GatewayPaymentStatus.CAPTURED:
                raise GatewayRejected("sandbox: only captured payments can be refunded")
            if request.amount > charge.amount_captured - charge.amount_refunded:
                raise GatewayRejected("sandbox: refund exceeds the captured amount")
            fails = CARDS[charge.payment_method].refund_fails
            if not fails:
                charge.amount_refunded += request.amount
            refund = SandboxRefund(
                reference="re_sbx_" + secrets.token_hex(12),
                refund_id=request.refund_id,
                idempotency_key=request.idempotency_key,
                charge_reference=charge.reference,
                amount=request.amount,
                status=GatewayRefundStatus.FAILED if fails else GatewayRefundStatus.SUCCEEDED,
                failure_reason="declined" if fails else None,
                created_at=self.clock.now(),
            )
            session.add(refund)
            return refund

        return _to_refund(await self.database.run(work))

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        async def work(session: AsyncSession) -> GatewayPayment:
            return _to_payment(await self._charge(session, reference))

        return await self.database.run(work, write=False)

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        async def work(session: AsyncSession) -> GatewayPayment | None:
            charge = await session.scalar(
                select(SandboxCharge)
                .where(SandboxCharge.payment_id == payment_id)
                .order_by(SandboxCharge.created_at.desc())
                .limit(1)
            )
            return None if charge is None else _to_payment(charge)

        return await self.database.run(work, write=False)

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        async def work(session: AsyncSession) -> GatewayRefund:
            refund = await session.get(SandboxRefund, reference)
            if refund is None:
                raise GatewayRejected(f"sandbox: no such refund {reference}")
            return _to_refund(refund)

        return await self.database.run(work, write=False)

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        async def work(session: AsyncSession) -> GatewayRefund | None:
            refund = await session.scalar(
                select(SandboxRefund).where(SandboxRefund.refund_id == refund_id).limit(1)
            )
            return None if refund is None else _to_refund(refund)

        return await self.database.run(work, write=False)

    # -- operator/test only: changes made "in the gateway's dashboard", behind our back ----

    async def force_capture(self, reference: str) -> GatewayPayment:
        """Capture an authorization at the gateway without telling us (drift for tests)."""
        return await self.capture(reference, await self._capturable(reference), "dashboard")

    async def force_cancel(self, reference: str) -> GatewayPayment:
        """Void an authorization at the gateway without telling us (drift for tests)."""
        return await self.cancel(reference, "dashboard")

    async def force_refund(self, reference: str, amount: int, currency: str) -> GatewayRefund:
        """Refund at the gateway without telling us, as from Stripe's dashboard: the refund
        carries none of our ids (drift for tests)."""
        request = RefundRequest(
            refund_id="",
            payment_reference=reference,
            amount=amount,
            currency=currency,
            reason=None,
            idempotency_key="dashboard_" + secrets.token_hex(12),
        )
        return await self.refund(request)

    async def _capturable(self, reference: str) -> int:
        async def work(session: AsyncSession) -> int:
            return (await self._charge(session, reference)).amount_capturable

        return await self.database.run(work, write=False)

    async def check_health(self) -> None:
        try:
            await self.database.ping()
        except Exception as error:  # its ledger is unreachable: so is the sandbox
            raise GatewayUnavailable("sandbox: ledger unreachable") from error

    async def close(self) -> None:
        return None

    @staticmethod
    async def _charge(
        session: AsyncSession, reference: str, *, for_update: bool = False
    ) -> SandboxCharge:
        charge = await session.get(SandboxCharge, reference, with_for_update=for_update)
        if charge is None:
            raise GatewayRejected(f"sandbox: no such payment {reference}")
        return charge


def _to_payment(charge: SandboxCharge) -> GatewayPayment:
    card = CARDS[charge.payment_method]
    decline = card.decline if charge.status == GatewayPaymentStatus.FAILED else None
    return GatewayPayment(
        reference=charge.reference,
        status=GatewayPaymentStatus(charge.status),
        amount=charge.amount,
        amount_capturable=charge.amount_capturable,
        amount_captured=charge.amount_captured,
        currency=charge.currency,
        card=CardDetails(
            brand=card.brand, last4=card.last4, exp_month=EXP_MONTH, exp_year=EXP_YEAR
        ),
        decline=decline,
    )


def _to_refund(refund: SandboxRefund) -> GatewayRefund:
    return GatewayRefund(
        reference=refund.reference,
        payment_reference=refund.charge_reference,
        amount=refund.amount,
        status=GatewayRefundStatus(refund.status),
        failure_reason=refund.failure_reason,
        refund_id=refund.refund_id or None,  # "" for a refund made in the "dashboard"
    )
