"""A confirm that crashed mid-call is resumed by the next attempt, never charged blindly."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container
from paysvc.gateways.base import GatewayUnavailable
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.payments.models import Payment
from tests.conftest import Api


async def _crashed_confirm(container: Container, payment_id: str) -> None:
    """What a process that died inside phase 2 of confirm leaves behind."""

    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(
                pending_operation="confirm",
                pending_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
                confirm_attempts=1,
            )
        )

    await container.db.run(work)


async def _charges(container: Container) -> int:
    async with container.db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(SandboxCharge)) or 0)


async def test_unanswerable_lookup_of_the_lost_attempt_goes_processing(
    api: Api, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = await api.create(payment_method="pm_card_visa")
    await _crashed_confirm(container, payment["id"])

    async def unreachable(_payment_id: str) -> None:
        raise GatewayUnavailable("ledger down")

    monkeypatch.setattr(container.gateways.for_payment("sandbox"), "find_payment", unreachable)
    resumed = await api.post(f"/payments/{payment['id']}/confirm", {}, status=202)
    assert resumed["status"] == "processing"  # the order stays held until reconciled
    assert await _charges(container) == 0  # and nothing was charged on a guess


async def test_resume_charges_once_when_the_lost_attempt_never_reached_the_gateway(
    api: Api, container: Container
) -> None:
    payment = await api.create(payment_method="pm_card_visa")
    await _crashed_confirm(container, payment["id"])
    resumed = await api.post(f"/payments/{payment['id']}/confirm", {})
    assert resumed["status"] == "captured"
    assert await _charges(container) == 1
