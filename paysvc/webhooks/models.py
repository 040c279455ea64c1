"""The webhook inbox: every verified event, stored once (its id is the primary key).

The payload (Stripe's JSON as signed: client secrets, receipt emails, billing names and
addresses) is encrypted at rest like other personal data, bound to its row; key rotation
re-encrypts it with every other encrypted column."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel


class InboxStatus(enum.StrEnum):
    APPLIED = "applied"  # its effect was applied (possibly "nothing to move": never backwards)
    PENDING = "pending"  # waiting for the payment (or refund) it concerns to appear
    IGNORED = "ignored"  # a type we do not act on, or an object we cannot use


class WebhookEvent(EncryptedModel, Base):
    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_pending_reference", "status", "payment_reference"),
        Index("ix_webhook_events_pending_payment", "status", "payment_id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_… id
    source: Mapped[str] = mapped_column(String(16))  # "stripe"
    type: Mapped[str] = mapped_column(String(64))
    payload_enc: Mapped[str | None] = mapped_column(Text)  # the raw JSON as signed, encrypted
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # What the event points at, to retry a pending event when its payment appears.
    payment_reference: Mapped[str | None] = mapped_column(String(255))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    payload = Encrypted()

    def __init__(self, **kwargs: Any) -> None:
        plain = {name: kwargs.pop(name) for name in self.__encrypted__ if name in kwargs}
        super().__init__(**kwargs)
        for name, value in plain.items():
            setattr(self, name, value)
