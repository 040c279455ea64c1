"""Writing audit entries, in the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.models import AuditEntry
from paysvc.auth.principal import Actor
from paysvc.clock import Clock
from paysvc.ids import new_id


class AuditLog:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def record(
        self,
        session: AsyncSession,
        actor: Actor,
        action: str,
        resource_type: str,
        resource_id: str | None,
        *,
        outcome: str = "success",
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            id=new_id("aud"),
            occurred_at=self.clock.now(),
            actor_id=actor.id,
            actor_role=str(actor.role),
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=outcome,
            origin=actor.origin,
            request_id=actor.request_id,
            details=json.dumps(details or {}, sort_keys=True),
        )
        session.add(entry)
        return entry
