"""Rows staged beside the ORM (paysvc.db.staged) are part of their unit of work: a query in it
sees them, a failed insert raises SQLAlchemy's error and stores nothing, a rollback drops them,
and encrypted fields are sealed before they reach the database (both databases)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Select, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.auth.principal import Actor, Role
from paysvc.bootstrap import Container
from paysvc.db.staged import stage
from paysvc.events.models import Event
from paysvc.payments.models import PaymentEvent
from paysvc.payments.service import NewIntent

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def history(payment_id: str, event_id: str) -> PaymentEvent:
    return PaymentEvent(
        id=event_id,
        payment_id=payment_id,
        type="note",
        from_status=None,
        to_status=None,
        amount=None,
        reason="staged",
        actor_id="t",
        created_at=NOW,
    )


def counted(payment_id: str) -> Select[tuple[int]]:
    return select(func.count()).where(PaymentEvent.payment_id == payment_id)


async def history_count(container: Container, payment_id: str) -> int:
    async with container.db.transaction(write=False) as session:
        return int(await session.scalar(counted(payment_id)) or 0)


@pytest.fixture
async def payment_id(container: Container) -> str:
    actor = Actor("cus_1", Role.CUSTOMER)
    created = await container.payments.create_intent(
        actor, NewIntent(order_id="o-staged", amount=500, currency="usd")
    )
    return created.id


async def test_a_query_in_the_unit_of_work_sees_staged_rows(
    container: Container, payment_id: str
) -> None:
    before = await history_count(container, payment_id)

    async def work(session: AsyncSession) -> int:
        stage(session, history(payment_id, "pev_staged_1"))
        stage(session, history(payment_id, "pev_staged_2"))
        return int(await session.scalar(counted(payment_id)) or 0)

    assert await container.db.run(work) == before + 2
    assert await history_count(container, payment_id) == before + 2


async def test_a_failed_insert_raises_and_stores_nothing(
    container: Container, payment_id: str
) -> None:
    before = await history_count(container, payment_id)

    async def work(session: AsyncSession) -> None:
        stage(session, history(payment_id, "pev_twice"))
        stage(session, history(payment_id, "pev_twice"))  # the same primary key

    with pytest.raises(IntegrityError) as raised:
        await container.db.run(work)
    assert "pev_twice" not in str(raised.value)  # values stay out of the error's text
    assert await history_count(container, payment_id) == before


async def test_a_rollback_drops_staged_rows(container: Container, payment_id: str) -> None:
    before = await history_count(container, payment_id)

    async def work(session: AsyncSession) -> None:
        stage(session, history(payment_id, "pev_dropped"))
        raise RuntimeError("the unit of work fails")

    with pytest.raises(RuntimeError):
        await container.db.run(work)

    async def nothing(session: AsyncSession) -> None:
        return None

    await container.db.run(nothing)  # a later unit of work writes nothing left over
    assert await history_count(container, payment_id) == before


async def test_encrypted_fields_are_sealed_when_staged(
    container: Container, payment_id: str
) -> None:
    event = Event(
        id="evt_staged",
        type="payment.created",
        payment_id=payment_id,
        order_id="o-staged",
        customer_id="cus_1",
        data={"secret-ish": "value"},
        receipt_email="someone@example.com",
        created_at=NOW,
    )

    async def work(session: AsyncSession) -> None:
        stage(session, event)

    await container.db.run(work)
    async with container.db.transaction(write=False) as session:
        stored = (
            await session.execute(
                text("SELECT data_enc, receipt_email_enc FROM events WHERE id = 'evt_staged'")
            )
        ).one()
        loaded = await session.get(Event, "evt_staged")
    assert "someone@example.com" not in str(stored) and "value" not in str(stored)
    assert loaded is not None
    assert (loaded.data, loaded.receipt_email) == ({"secret-ish": "value"}, "someone@example.com")
