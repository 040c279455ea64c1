"""Disputes (chargebacks) of a payment, as the gateway reports them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime


class Dispute(Base):
    __tablename__ = "disputes"
    __table_args__ = (Index("ix_disputes_payment_created", "payment_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # our dp_… id
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    gateway_reference: Mapped[str] = mapped_column(String(255), unique=True)  # Stripe dp_/du_
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    evidence_due_by: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
