"""Writing audit entries, in the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.models import AuditEntry, stamp
from paysvc.auth.principal import Actor
from paysvc.clock import Clock
from paysvc.db.encrypted import keyring_of
from paysvc.db.staged import stage
from paysvc.ids import new_id
from paysvc.metrics import after_commit


class AuditLog:
    """Records entries in the caller's unit of work. `on_commit` (set by the app to the
    sealer's `wake`) is called after a transaction that recorded entries commits, so they are
    chained moments later; a rolled-back transaction leaves nothing and calls nothing."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.on_commit: Callable[[], None] | None = None

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
        """Add the entry to the caller's unit of work, stamped with its pending MAC."""
        entry = self.entry(actor, action, resource_type, resource_id, outcome, details)
        stamp(entry, keyring_of(session.sync_session))
        stage(session, entry)
        self._notify_after_commit(session)
        return entry

    def entry(
        self,
        actor: Actor,
        action: str,
        resource_type: str,
        resource_id: str | None,
        outcome: str = "success",
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """The entry `record` writes, not yet stamped or stored."""
        return AuditEntry(
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

    def _notify_after_commit(self, session: AsyncSession) -> None:
        if self.on_commit is not None:
            after_commit(session, self.on_commit, once=True)
