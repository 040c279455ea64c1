"""Operator use cases over the outbox: list events with their delivery state, redeliver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock
from paysvc.db.engine import Database
from paysvc.db.pagination import Page
from paysvc.errors import NotFound, PermissionDenied
from paysvc.events.models import Event, EventDelivery
from paysvc.events.outbox import GIVE_UP_AFTER, Outbox
from paysvc.events.repository import EventFilter, EventRepository
from paysvc.ids import plausible


@dataclass(frozen=True, slots=True)
class EventWithDeliveries:
    event: Event
    deliveries: Sequence[EventDelivery]


class EventService:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, outbox: Outbox) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.outbox = outbox

    async def list(
        self, actor: Actor, where: EventFilter, *, limit: int, starting_after: str | None
    ) -> Page[EventWithDeliveries]:
        """Newest first, each with its deliveries (admins only; the read is audited)."""
        _admin(actor)

        async def work(session: AsyncSession) -> Page[EventWithDeliveries]:
            repo = EventRepository(session)
            page: Page[Event] = await repo.list(where, limit=limit, starting_after=starting_after)
            deliveries = await repo.deliveries_of([e.id for e in page.items])
            items = [
                EventWithDeliveries(e, [d for d in deliveries if d.event_id == e.id])
                for e in page.items
            ]
            self.audit.record(
                session,
                actor,
                "events.list",
                "event",
                None,
                details={
                    "filter": {k: v for k, v in asdict(where).items() if v is not None},
                    "returned": len(items),
                },
            )
            return Page(items, page.has_more)

        return await self.db.run(work)

    async def redeliver(self, actor: Actor, event_id: str) -> int:
        """Queue the event again for each of its destinations; returns how many."""
        _admin(actor)

        async def work(session: AsyncSession) -> int:
            repo = EventRepository(session)
            if not plausible(event_id) or await repo.get(event_id) is None:
                raise NotFound("No such event", param="id")
            now = self.clock.now()
            queued = await repo.requeue_event(event_id, now, now + GIVE_UP_AFTER)
            self._audit(session, actor, event_id, queued)
            return queued

        return await self.db.run(work)

    async def redeliver_dead(self, actor: Actor) -> int:
        """Queue every dead delivery again; returns how many."""
        _admin(actor)

        async def work(session: AsyncSession) -> int:
            now = self.clock.now()
            queued = await EventRepository(session).requeue_dead(now, now + GIVE_UP_AFTER)
            self._audit(session, actor, None, queued)
            return queued

        return await self.db.run(work)

    def _audit(
        self, session: AsyncSession, actor: Actor, event_id: str | None, queued: int
    ) -> None:
        self.audit.record(
            session, actor, "event.redeliver", "event", event_id, details={"queued": queued}
        )
        if queued:
            self.outbox.wake_after_commit(session)


def _admin(actor: Actor) -> None:
    if actor.role != Role.ADMIN:
        raise PermissionDenied("Admin only")
