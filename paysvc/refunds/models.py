"""Refund rows. A refund belongs to one payment and carries the payment's currency."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel
from paysvc.refunds.states import RefundStatus

_STATUSES = ", ".join(f"'{s}'" for s in RefundStatus)


class Refund(EncryptedModel, Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status_known"),
        Index("ix_refunds_payment_created", "payment_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    meta_enc: Mapped[str | None] = mapped_column(Text)
    gateway_reference: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    meta = Encrypted(as_json=True)

    def __init__(self, **kwargs: Any) -> None:
        plain = {name: kwargs.pop(name) for name in self.__encrypted__ if name in kwargs}
        super().__init__(**kwargs)
        for name, value in plain.items():
            setattr(self, name, value)
