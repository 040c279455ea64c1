"""One row per (principal, Idempotency-Key): the request's fingerprint and, once it has
executed, the response to replay. The stored body is encrypted like every other value that
may carry customer data (metadata, description, receipt email)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import Encrypted, EncryptedModel


class KeyState(enum.StrEnum):
    IN_FLIGHT = "in_flight"
    DONE = "done"


class IdempotencyKey(EncryptedModel, Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "key", name="uq_idempotency_keys_principal_key"),
        Index("ix_idempotency_keys_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal: Mapped[str] = mapped_column(String(80))  # "<role>:<principal id>"
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 hex of method, path, body
    state: Mapped[str] = mapped_column(String(12))
    # When the current execution started; an in-flight row older than the stale threshold
    # belongs to a crashed or hung request and may be taken over.
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(64))  # of the executing request
    # What the first execution created in its phase 1 (an operation op_…, or a payment): a
    # retry after a crash re-attaches to it instead of executing again.
    resource_id: Mapped[str | None] = mapped_column(String(40))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    response_body = Encrypted()

    def __init__(self, **kwargs: Any) -> None:
        plain = {name: kwargs.pop(name) for name in self.__encrypted__ if name in kwargs}
        super().__init__(**kwargs)
        for name, value in plain.items():
            setattr(self, name, value)
