"""The outbox: one row per event, one delivery row per destination, one row per attempt."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel

# Autoincrementing ids give the order of deliveries of one payment (SQLite needs INTEGER).
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")


class Event(EncryptedModel, Base):
    """An outgoing event, written in the same transaction as the state change it reports.
    The object it carries (and the receipt email for notifications) is encrypted at rest."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_created", "created_at", "id"),
        Index("ix_events_payment", "payment_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    order_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    data_enc: Mapped[str | None] = mapped_column(Text)
    receipt_email_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    data = Encrypted(as_json=True)
    receipt_email = Encrypted()

    def __init__(self, **kwargs: Any) -> None:
        plain = {name: kwargs.pop(name) for name in self.__encrypted__ if name in kwargs}
        super().__init__(**kwargs)
        for name, value in plain.items():
            setattr(self, name, value)


class EventDelivery(Base):
    """One event on its way to one destination: pending → delivered | failed | dead."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "destination"),
        Index("ix_event_deliveries_due", "status", "next_attempt_at"),
        Index("ix_event_deliveries_order", "payment_id", "destination", "status", "id"),
    )

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    payment_id: Mapped[str] = mapped_column(String(40))
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    give_up_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # A claim is a lease: the instance sending it owns it until then (crash: another retries).
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class EventAttempt(Base):
    """One POST (or PUT) of a delivery: when, what came back, how long it took."""

    __tablename__ = "event_attempts"
    __table_args__ = (Index("ix_event_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("event_deliveries.id"))
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(Integer)
