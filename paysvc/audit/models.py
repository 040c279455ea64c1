"""The audit trail: append-only rows, chained with a keyed MAC when sealed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_occurred", "occurred_at", "id"),
        Index("ix_audit_entries_resource", "resource_id"),
        Index("ix_audit_entries_actor", "actor_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="{}")
    # Filled by the sealer just after commit: position in the chain and its keyed MAC.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    mac: Mapped[str | None] = mapped_column(String(64))
