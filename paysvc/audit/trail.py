"""Reading the audit trail: the admin list and the export, each read itself audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain, repository
from paysvc.audit.models import AuditEntry
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import rfc3339
from paysvc.db.engine import Database
from paysvc.db.pagination import Page
from paysvc.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    resource_id: str | None = None
    actor_id: str | None = None

    def details(self) -> dict[str, Any]:
        return {
            "since": rfc3339(self.since),
            "until": rfc3339(self.until),
            "resource_id": self.resource_id,
            "actor_id": self.actor_id,
        }


class AuditTrail:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    async def list(
        self, actor: Actor, where: AuditFilter, *, limit: int, starting_after: str | None
    ) -> Page[AuditEntry]:
        """A page of entries, newest first (admins only); the read is audited in the same
        unit of work, so a page is never shown without its own trace."""
        if actor.role != Role.ADMIN:
            raise PermissionDenied("Admin only")

        async def work(session: AsyncSession) -> Page[AuditEntry]:
            entries, has_more = await repository.list_entries(
                session,
                since=where.since,
                until=where.until,
                resource_id=where.resource_id,
                actor_id=where.actor_id,
                limit=limit,
                starting_after=starting_after,
            )
            self.audit.record(
                session,
                actor,
                "audit.list",
                "audit_trail",
                None,
                details={**where.details(), "returned": len(entries)},
            )
            return Page(entries, has_more)

        return await self.db.run(work)

    async def export(
        self,
        actor: Actor,
        out: TextIO,
        where: AuditFilter,
        *,
        fmt: Literal["jsonl", "csv"] = "jsonl",
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream entries (oldest first) to `out`, then audit the export; returns the count."""
        count = await chain.export(
            self.db, out, since=where.since, until=where.until, fmt=fmt, progress=progress
        )

        async def work(session: AsyncSession) -> None:
            self.audit.record(
                session,
                actor,
                "audit.export",
                "audit_trail",
                None,
                details={**where.details(), "format": fmt, "entries": count},
            )

        await self.db.run(work)
        return count
