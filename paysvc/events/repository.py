"""All SQL about outgoing events and their deliveries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from paysvc.db.pagination import Page, keyset_page
from paysvc.events.models import Event, EventAttempt, EventDelivery

PENDING = "pending"


@dataclass(frozen=True, slots=True)
class EventFilter:
    type: str | None = None
    status: str | None = None  # of any of its deliveries
    payment_id: str | None = None
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    dead: int
    oldest_pending: dt.datetime | None


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: str) -> Event | None:
        return await self.session.get(Event, event_id)

    async def events(self, ids: Sequence[str]) -> dict[str, Event]:
        rows = await self.session.scalars(select(Event).where(Event.id.in_(ids)))
        return {row.id: row for row in rows}

    async def deliveries_of(self, event_ids: Sequence[str]) -> Sequence[EventDelivery]:
        query = (
            select(EventDelivery)
            .where(EventDelivery.event_id.in_(event_ids))
            .order_by(EventDelivery.id)
        )
        return list(await self.session.scalars(query))

    async def list(
        self, where: EventFilter, *, limit: int, starting_after: str | None
    ) -> Page[Event]:
        query: Select[tuple[Event]] = select(Event)
        if where.type is not None:
            query = query.where(Event.type == where.type)
        if where.payment_id is not None:
            query = query.where(Event.payment_id == where.payment_id)
        if where.status is not None or where.destination is not None:
            conditions = [EventDelivery.event_id == Event.id]
            if where.status is not None:
                conditions.append(EventDelivery.status == where.status)
            if where.destination is not None:
                conditions.append(EventDelivery.destination == where.destination)
            query = query.where(exists().where(*conditions))
        return await keyset_page(
            self.session, Event, query, limit=limit, starting_after=starting_after
        )

    async def claim_due(
        self, now: dt.datetime, *, limit: int, token: str, lease: dt.timedelta
    ) -> Sequence[EventDelivery]:
        """Claim (lease) up to `limit` due deliveries, each the earliest still pending of its
        payment and destination, so one payment's events go out in order. PostgreSQL: rows
        other instances are claiming right now are skipped (FOR UPDATE SKIP LOCKED); SQLite:
        the write transaction already serializes claimers."""
        params = {"now": now, "limit": limit}
        claimed = list(await self.session.scalars(_CLAIM, params))
        for delivery in claimed:
            delivery.claim_token = token
            delivery.claimed_until = now + lease
        return claimed

    async def claimed(self, delivery_ids: Sequence[int], token: str) -> dict[int, EventDelivery]:
        """Those of the deliveries this claim still owns (locked for the update)."""
        query = (
            select(EventDelivery)
            .where(EventDelivery.id.in_(delivery_ids), EventDelivery.claim_token == token)
            .order_by(EventDelivery.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {d.id: d for d in await self.session.scalars(query)}

    async def add_attempts(self, attempts: Sequence[dict[str, object]]) -> None:
        """Insert attempt rows (EventAttempt columns) in one executemany: nobody needs their
        ids back, so no ORM object (and no INSERT per row to fetch each id)."""
        if attempts:
            await self.session.execute(insert(EventAttempt), attempts)

    async def next_due(self) -> dt.datetime | None:
        """When the next delivery that may go out (the earliest pending of its payment and
        destination) is due, or its claim runs out; None when nothing is pending."""
        found: dt.datetime | None = await self.session.scalar(_NEXT_DUE)
        return found

    async def backlog(self) -> Backlog:
        result = await self.session.execute(
            select(EventDelivery.status, func.count())
            .where(EventDelivery.status.in_((PENDING, "dead")))
            .group_by(EventDelivery.status)
        )
        counts: dict[str, int] = {status: number for status, number in result.tuples()}
        oldest = await self.session.scalar(
            select(func.min(Event.created_at))
            .join(EventDelivery, EventDelivery.event_id == Event.id)
            .where(EventDelivery.status == PENDING)
        )
        return Backlog(counts.get(PENDING, 0), counts.get("dead", 0), oldest)

    async def requeue(
        self, where: ColumnElement[bool], now: dt.datetime, give_up_at: dt.datetime
    ) -> int:
        """Queue matching deliveries again, due now (redelivery); returns how many. One that
        is still pending is only hurried: its claim (a send in flight) is left alone, so it is
        never sent twice at once."""
        hurried = await self.session.execute(
            update(EventDelivery)
            .where(where, EventDelivery.status == PENDING)
            .values(next_attempt_at=now, give_up_at=give_up_at)
            .execution_options(synchronize_session=False)
        )
        moved = await self.session.execute(
            update(EventDelivery)
            .where(where, EventDelivery.status != PENDING)
            .values(
                status=PENDING,
                next_attempt_at=now,
                give_up_at=give_up_at,
                claim_token=None,
                claimed_until=None,
            )
            .execution_options(synchronize_session=False)
        )
        return int(moved.rowcount) + int(hurried.rowcount)  # type: ignore[attr-defined]

    async def requeue_event(self, event_id: str, now: dt.datetime, give_up_at: dt.datetime) -> int:
        return await self.requeue(EventDelivery.event_id == event_id, now, give_up_at)

    async def requeue_dead(self, now: dt.datetime, give_up_at: dt.datetime) -> int:
        return await self.requeue(EventDelivery.status == "dead", now, give_up_at)


def _head() -> ColumnElement[bool]:
    """A pending delivery with no earlier pending delivery of its payment and destination."""
    earlier = aliased(EventDelivery)
    return and_(
        EventDelivery.status == PENDING,
        ~exists().where(
            earlier.payment_id == EventDelivery.payment_id,
            earlier.destination == EventDelivery.destination,
            earlier.status == PENDING,
            earlier.id < EventDelivery.id,
        ),
    )


# Built once (they are the same every time; only the parameters change).
_CLAIM = (
    select(EventDelivery)
    .where(
        _head(),
        EventDelivery.next_attempt_at <= bindparam("now"),
        or_(
            EventDelivery.claimed_until.is_(None),
            EventDelivery.claimed_until < bindparam("now"),
        ),
    )
    .order_by(EventDelivery.id)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True, of=EventDelivery)
)
_DUE = case(
    (EventDelivery.claimed_until > EventDelivery.next_attempt_at, EventDelivery.claimed_until),
    else_=EventDelivery.next_attempt_at,
)
_NEXT_DUE = select(func.min(_DUE)).where(_head())
