"""Payment rows and their append-only event history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel
from paysvc.payments.states import LIVE

_LIVE_SQL = ", ".join(f"'{s}'" for s in sorted(LIVE))
# One live payment per order. A confirm in flight holds its order too: phase 1 locks every
# payment of the order and checks for open confirm operations (OperationRepository).
_HOLDS_ORDER = f"status IN ({_LIVE_SQL})"


class Payment(EncryptedModel, Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("amount_capturable >= 0", name="capturable_non_negative"),
        CheckConstraint(
            "amount_captured >= 0 AND amount_captured <= amount", name="captured_le_amount"
        ),
        CheckConstraint(
            "amount_refunded >= 0 AND amount_refunded <= amount_captured",
            name="refunded_le_captured",
        ),
        Index(
            "uq_payments_live_order",
            "order_id",
            unique=True,
            sqlite_where=text(_HOLDS_ORDER),
            postgresql_where=text(_HOLDS_ORDER),
        ),
        Index("ix_payments_created", "created_at", "id"),
        Index("ix_payments_customer_created", "customer_id", "created_at", "id"),
        Index("ix_payments_status_created", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount_capturable: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(24))
    capture_method: Mapped[str] = mapped_column(String(12))
    payment_method_enc: Mapped[str | None] = mapped_column(Text)
    card_type: Mapped[str | None] = mapped_column(String(16))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp_month: Mapped[int | None] = mapped_column(Integer)
    card_exp_year: Mapped[int | None] = mapped_column(Integer)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    cancellation_reason: Mapped[str | None] = mapped_column(String(32))
    description_enc: Mapped[str | None] = mapped_column(Text)
    meta_enc: Mapped[str | None] = mapped_column(Text)
    receipt_email_enc: Mapped[str | None] = mapped_column(Text)
    # The contract's `next_action` while requires_action (its URL is the customer's key to
    # the authentication page: encrypted like the other personal data).
    next_action_enc: Mapped[str | None] = mapped_column(Text)
    # Where the gateway sends the customer back after authenticating (from confirm); kept so
    # a re-sent charge carries exactly the parameters of the first attempt.
    return_url: Mapped[str | None] = mapped_column(String(2048))
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)
    gateway: Mapped[str] = mapped_column(String(16))
    gateway_reference: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    payment_method = Encrypted()
    description = Encrypted()
    meta = Encrypted(as_json=True)
    receipt_email = Encrypted()
    next_action = Encrypted(as_json=True)

    def __init__(self, **kwargs: Any) -> None:
        plain = {name: kwargs.pop(name) for name in self.__encrypted__ if name in kwargs}
        super().__init__(**kwargs)
        for name, value in plain.items():
            setattr(self, name, value)

    @property
    def amount_refundable(self) -> int:
        return self.amount_captured - self.amount_refunded


class PaymentEvent(Base):
    """Append-only history: every status change, refund outcome and reconciliation fix."""

    __tablename__ = "payment_events"
    __table_args__ = (Index("ix_payment_events_payment", "payment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    type: Mapped[str] = mapped_column(String(48))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str | None] = mapped_column(String(24))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(500))
    actor_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
