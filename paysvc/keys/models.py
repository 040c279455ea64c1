"""Small records that make key checks cheap and rolling rotations safe.

`KeyInUse`: every key id that stored data may be under (data encrypted, audit MACs). A row is
added in the same transaction as a process's first write under its active key, removed by
`keys rotate` once no value or MAC is left under it; start-up checks this record, a handful of
rows, instead of scanning every encrypted value.

`KeyHolder`: one row per running instance: its active key and the keys it can read, refreshed
while it runs. `keys status` tells from it whether every instance can read what the others write.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from paysvc.db.base import Base, UTCDateTime


class KeyInUse(Base):
    __tablename__ = "encryption_keys_in_use"

    key_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class KeyHolder(Base):
    __tablename__ = "encryption_key_holders"

    instance_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    active_key_id: Mapped[str] = mapped_column(String(12))
    readable_key_ids: Mapped[str] = mapped_column(String(500))  # comma-separated
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
