"""Admin tests run on a container whose clock the test sets, so payments are created on
chosen days (through the real HTTP stack and services, not by editing rows)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from paysvc.payments.models import PaymentEvent
from tests.conftest import ADMIN, Api
from tests.support import rows


class SetClock:
    """Real time until a test sets `at`; then exactly `at`."""

    def __init__(self) -> None:
        self.at: dt.datetime | None = None

    def now(self) -> dt.datetime:
        return self.at or dt.datetime.now(dt.UTC)


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


async def put_status(
    api: Api,
    payment_id: str,
    status: str,
    reason: str | None = "support ticket 4711: bank confirms",
    *,
    headers: dict[str, str] = ADMIN,
    expect: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, **extra}
    if reason is not None:
        body["reason"] = reason
    response = await api.client.put(
        f"/admin/payments/{payment_id}/status", json=body, headers=headers
    )
    data: dict[str, Any] = await response.json()
    assert response.status == expect, data
    return data


async def history(container: Container, payment_id: str) -> list[PaymentEvent]:
    async with container.db.transaction(write=False) as session:
        query = (
            select(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id)
            .order_by(PaymentEvent.created_at, PaymentEvent.id)
        )
        return list(await session.scalars(query))


async def audit_of(container: Container, payment_id: str) -> list[AuditEntry]:
    return await rows(container, AuditEntry, AuditEntry.resource_id == payment_id)
