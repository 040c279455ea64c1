"""`INSERT ... ON CONFLICT DO NOTHING` in the session's dialect (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_if_new(
    session: AsyncSession, model: Any, conflict: Any
) -> postgresql.Insert | sqlite.Insert:
    """An insert into `model` that inserts nothing (no error) when a row with the same
    `conflict` column exists; a concurrent insert waits for the first to commit."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(model).on_conflict_do_nothing(index_elements=[conflict])
