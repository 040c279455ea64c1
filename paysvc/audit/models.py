"""The audit trail: append-only rows, chained with a keyed MAC when sealed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column, object_session

from paysvc.audit.integrity import fields_of, pending_mac
from paysvc.db.base import Base, UTCDateTime
from paysvc.db.encrypted import keyring_of
from paysvc.keys.keyring import Keyring


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_occurred", "occurred_at", "id"),
        Index("ix_audit_entries_resource_occurred", "resource_id", "occurred_at", "id"),
        Index("ix_audit_entries_actor_occurred", "actor_id", "occurred_at", "id"),
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
    # `mac` is stamped at insert (a pending MAC, see below); the sealer, just after commit, sets
    # `seq` (the position in the chain) and replaces `mac` with the chained MAC.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    mac: Mapped[str | None] = mapped_column(String(64))


@event.listens_for(AuditEntry, "before_insert")
def _stamp_pending_mac(_mapper: Any, _connection: Any, entry: AuditEntry) -> None:
    if entry.seq is not None:
        return
    session = object_session(entry)
    if session is None:
        raise RuntimeError("an audit entry is inserted through a session of paysvc.db.Database")
    stamp(entry, keyring_of(session))


def stamp(entry: AuditEntry, keyring: Keyring) -> None:
    """MAC a new entry in its own transaction, under the active key, before it has a seq.

    The sealer only chains entries whose stamp verifies, so a row inserted straight into the
    database (without the keys) is never sealed and `verify` reports it.
    """
    if entry.details is None:
        entry.details = "{}"
    entry.mac = pending_mac(keyring, keyring.active_id, fields_of(entry))


class AuditCheckpoint(Base):
    """A point up to which the chain verified: entry `seq` (`entry_id`) had link digest `digest`
    (hex). MACed under the chain key, so `audit verify --from-checkpoint` can start here
    instead of at entry 1; someone without the keys cannot forge or move one."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
