"""The embedded sandbox gateway: Stripe test-mode tokens, with a durable ledger of its own.

The ledger lives in its own tables and is written in its own transactions, as if it were a
remote system: a lost answer (`pm_card_timeout`) leaves the truth here for reconciliation.
Idempotency keys are honoured like Stripe's: the same key returns the first result.

`pm_card_threeDSecure2Required` plays the card issuer's 3-D Secure challenge: the charge answers
`requires_action` with the URL of the sandbox's own authentication page
(`{PUBLIC_URL}/sandbox/3ds/{token}`, served by paysvc/web). The token is random, bound to that
one charge (one idempotency key, so one operation), stored only as a hash for lookup and
encrypted for the answer; the customer's choice there (`authenticate`) decides the charge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, replace

from sqlalchemy import BigInteger, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.clock import Clock
from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel
from paysvc.db.engine import Database
from paysvc.db.inserts import insert_if_new
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
    NextAction,
    OutcomeUnknown,
    RefundRequest,
)

AUTH_PATH = "/sandbox/3ds/"


class SandboxCharge(Base):
    __tablename__ = "sandbox_charges"

    reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    payment_method: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    # Kept for a charge that settles later (3-D Secure): authorize only, or capture.
    capture_method: Mapped[str | None] = mapped_column(String(12))
    amount_capturable: Mapped[int] = mapped_column(BigInteger)
    amount_captured: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    decline_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SandboxAuthentication(EncryptedModel, Base):
    """The 3-D Secure challenge of one charge, and the customer's answer to it."""

    __tablename__ = "sandbox_authentications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    charge_reference: Mapped[str] = mapped_column(String(40), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_enc: Mapped[str | None] = mapped_column(Text)
    return_url: Mapped[str | None] = mapped_column(String(2048))
    outcome: Mapped[str | None] = mapped_column(String(16))  # succeeded | failed
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    token = Encrypted()


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the authentication page shows, and where it sends the browser afterwards."""

    payment_id: str
    amount: int
    currency: str
    return_url: str | None
    outcome: str | None  # None while the customer has not answered
    open: bool  # the charge still waits for this answer


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
    authenticate: bool = False  # 3-D Secure: the customer must pass a challenge first


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
    "pm_card_threeDSecure2Required": _Card("visa", "3184", authenticate=True),
}
EXP_MONTH, EXP_YEAR = 12, 2034
AUTHENTICATION_FAILED = _declined(
    "payment_intent_authentication_failure",
    None,
    "The customer did not pass 3-D Secure authentication.",
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SandboxGateway:
    name = "sandbox"
    idempotency_window = STRIPE_IDEMPOTENCY_WINDOW

    def __init__(self, database: Database, clock: Clock, public_url: str = "") -> None:
        self.database = database
        self.clock = clock
        self.public_url = public_url.rstrip("/")  # where browsers reach the authentication page

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        card = CARDS.get(request.payment_method)
        if card is None:
            raise InvalidPaymentMethod(f"No such payment method: {request.payment_method!r}")

        async def work(session: AsyncSession) -> GatewayPayment:
            manual = request.capture_method == "manual"
            ok = card.decline is None
            status = (
                GatewayPaymentStatus.FAILED
                if not ok
                else GatewayPaymentStatus.REQUIRES_ACTION
                if card.authenticate
                else GatewayPaymentStatus.AUTHORIZED
                if manual
                else GatewayPaymentStatus.CAPTURED
            )
            settled = ok and not card.authenticate
            values = {
                "reference": "pi_sbx_" + secrets.token_hex(12),
                "payment_id": request.payment_id,
                "idempotency_key": request.idempotency_key,
                "payment_method": request.payment_method,
                "amount": request.amount,
                "currency": request.currency,
                "status": status,
                "capture_method": request.capture_method,
                "amount_capturable": request.amount if settled and manual else 0,
                "amount_captured": request.amount if settled and not manual else 0,
                "amount_refunded": 0,
                "decline_code": card.decline.decline_code if card.decline else None,
                "created_at": self.clock.now(),
            }
            # One statement: the charge, unless this key made one already (then that one's
            # answer, as Stripe replays a key's first result). No encrypted column here.
            inserted = await session.execute(
                insert_if_new(session, SandboxCharge, SandboxCharge.idempotency_key)
                .values(values)
                .returning(SandboxCharge.reference)
            )
            if inserted.first() is None:
                existing = await session.scalar(
                    select(SandboxCharge).where(
                        SandboxCharge.idempotency_key == request.idempotency_key
                    )
                )
                assert existing is not None  # the conflicting row (charges are never deleted)
                return await self._answer(session, existing)
            charge = SandboxCharge(**values)  # as inserted (not added: nothing more to write)
            if card.authenticate:
                token = secrets.token_urlsafe(32)
                session.add(
                    SandboxAuthentication(
                        id="sba_" + secrets.token_hex(12),
                        charge_reference=charge.reference,
                        token_hash=token_hash(token),
                        token=token,  # encrypted by the flush hooks (an ORM insert)
                        return_url=request.return_url,
                        created_at=self.clock.now(),
                    )
                )
                await session.flush()
            return await self._answer(session, charge)

        payment = await self.database.run(work)
        if card.timeout:
            raise OutcomeUnknown("sandbox: the answer was lost (pm_card_timeout)")
        if card.decline is not None:
            raise CardDeclined(card.decline, payment)
        return payment

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        async def work(session: AsyncSession) -> SandboxCharge:
            charge = await self._charge(session, reference, for_update=True)
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
            # Row lock: the customer's 3-D Secure answer may be deciding this charge right now.
            charge = await self._charge(session, reference, for_update=True)
            if charge.status == GatewayPaymentStatus.CANCELED:
                return charge
            if charge.status not in (
                GatewayPaymentStatus.AUTHORIZED,
                GatewayPaymentStatus.REQUIRES_ACTION,
            ):
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
            return await self._answer(session, await self._charge(session, reference))

        return await self.database.run(work, write=False)

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        async def work(session: AsyncSession) -> GatewayPayment | None:
            charge = await session.scalar(
                select(SandboxCharge)
                .where(SandboxCharge.payment_id == payment_id)
                .order_by(SandboxCharge.created_at.desc())
                .limit(1)
            )
            return None if charge is None else await self._answer(session, charge)

        return await self.database.run(work, write=False)

    # -- the 3-D Secure challenge (the sandbox's authentication page) ----------------------

    async def challenge(self, token: str) -> Challenge | None:
        """The challenge this token opens, or None for a token the sandbox never issued."""

        async def work(session: AsyncSession) -> Challenge | None:
            found = await self._authentication(session, token)
            if found is None:
                return None
            authentication, charge = found
            return _challenge(authentication, charge)

        return await self.database.run(work, write=False)

    async def authenticate(self, token: str, passed: bool) -> Challenge | None:
        """The customer's answer: the charge succeeds (captured, or authorized when manual)
        or fails with `payment_intent_authentication_failure`. The first answer stands; a
        second one (a double click, the back button) changes nothing. None for an unknown
        token."""

        async def work(session: AsyncSession) -> Challenge | None:
            found = await self._authentication(session, token, for_update=True)
            if found is None:
                return None
            authentication, charge = found
            if charge.status == GatewayPaymentStatus.REQUIRES_ACTION:
                if passed and charge.capture_method == "manual":
                    charge.status = GatewayPaymentStatus.AUTHORIZED
                    charge.amount_capturable = charge.amount
                elif passed:
                    charge.status = GatewayPaymentStatus.CAPTURED
                    charge.amount_captured = charge.amount
                else:
                    charge.status = GatewayPaymentStatus.FAILED
                    charge.decline_code = AUTHENTICATION_FAILED.code
                authentication.outcome = "succeeded" if passed else "failed"
                authentication.decided_at = self.clock.now()
            return _challenge(authentication, charge)

        return await self.database.run(work)

    async def _authentication(
        self, session: AsyncSession, token: str, *, for_update: bool = False
    ) -> tuple[SandboxAuthentication, SandboxCharge] | None:
        authentication = await session.scalar(
            select(SandboxAuthentication).where(
                SandboxAuthentication.token_hash == token_hash(token)
            )
        )
        if authentication is None:
            return None
        charge = await self._charge(session, authentication.charge_reference, for_update=for_update)
        return authentication, charge

    async def _answer(self, session: AsyncSession, charge: SandboxCharge) -> GatewayPayment:
        """The charge as the gateway reports it, with the challenge's URL while it waits."""
        payment = _to_payment(charge)
        if charge.status != GatewayPaymentStatus.REQUIRES_ACTION:
            return payment
        authentication = await session.scalar(
            select(SandboxAuthentication).where(
                SandboxAuthentication.charge_reference == charge.reference
            )
        )
        if authentication is None or authentication.token is None:
            return payment
        return replace(
            payment,
            next_action=NextAction(
                "redirect_to_url",
                url=f"{self.public_url}{AUTH_PATH}{authentication.token}",
                return_url=authentication.return_url,
            ),
        )

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


def _challenge(authentication: SandboxAuthentication, charge: SandboxCharge) -> Challenge:
    return Challenge(
        payment_id=charge.payment_id,
        amount=charge.amount,
        currency=charge.currency,
        return_url=authentication.return_url,
        outcome=authentication.outcome,
        open=charge.status == GatewayPaymentStatus.REQUIRES_ACTION,
    )


def _to_payment(charge: SandboxCharge) -> GatewayPayment:
    card = CARDS[charge.payment_method]
    decline = None
    if charge.status == GatewayPaymentStatus.FAILED:
        decline = AUTHENTICATION_FAILED if card.authenticate else card.decline
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
