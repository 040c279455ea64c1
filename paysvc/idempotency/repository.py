"""All SQL about idempotency keys."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.idempotency.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, principal: str, key: str) -> IdempotencyKey | None:
        """The row for (principal, key), row-locked on PostgreSQL (SQLite already holds the
        write lock: BEGIN IMMEDIATE)."""
        query = (
            select(IdempotencyKey)
            .where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(query)).first()

    async def get(self, record_id: str) -> IdempotencyKey | None:
        query = (
            select(IdempotencyKey)
            .where(IdempotencyKey.id == record_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(query)).first()

    async def attach(self, record_id: str, locked_at: dt.datetime, resource_id: str) -> None:
        """Record what the execution owning the row created (first resource only)."""
        await self.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == record_id,
                IdempotencyKey.locked_at == locked_at,
                IdempotencyKey.resource_id.is_(None),
            )
            .values(resource_id=resource_id)
        )

    def add(self, record: IdempotencyKey) -> None:
        self.session.add(record)

    async def remove(self, record: IdempotencyKey) -> None:
        await self.session.delete(record)

    async def purge_created_before(self, cutoff: dt.datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)
