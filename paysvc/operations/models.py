"""The money ledger: one row per call that moves money at a gateway (API.md, "Gateway
operations"). The row's id is the gateway idempotency key for every attempt of that call."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.operations.states import OperationKind, OperationStatus

_KINDS = ", ".join(f"'{k}'" for k in OperationKind)
_STATUSES = ", ".join(f"'{s}'" for s in OperationStatus)


class Operation(Base):
    __tablename__ = "operations"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint(f"kind IN ({_KINDS})", name="kind_known"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status_known"),
        Index("ix_operations_payment_created", "payment_id", "created_at", "id"),
        Index("ix_operations_status_next_check", "status", "next_check_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # op_…: the idempotency key
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # calls handed to the gateway
    gateway: Mapped[str] = mapped_column(String(16))
    gateway_reference: Mapped[str | None] = mapped_column(String(255))
    refund_id: Mapped[str | None] = mapped_column(ForeignKey("refunds.id"), index=True)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # When the completer should next ask the gateway about a pending operation.
    next_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
