"""Orders this service was told are cancelled: their payments are settled for good."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime


class OrderCancellation(Base):
    __tablename__ = "order_cancellations"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
