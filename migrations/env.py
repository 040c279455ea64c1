"""Alembic environment: async, for SQLite (batch mode) and PostgreSQL.

The URL comes from `config.attributes["url"]` (set by paysvc.db.migrate) or DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from paysvc.config import DEFAULT_DATABASE_URL
from paysvc.db.base import UTCDateTime
from paysvc.db.engine import create_engine
from paysvc.db.models import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    return str(url)


def _render_item(kind: str, item: Any, _autogen: Any) -> str | bool:
    """Render our UTCDateTime as the plain timezone-aware DateTime it stores."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several instances starting at once: one migrates, the others wait, then see head.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(72470001)")
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
