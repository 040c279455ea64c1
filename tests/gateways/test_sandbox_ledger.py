"""The sandbox gateway's own ledger: one charge per idempotency key, as Stripe keeps it."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container
from paysvc.gateways.base import ChargeRequest, GatewayPaymentStatus
from paysvc.gateways.sandbox import SandboxCharge


async def test_a_key_sent_twice_at_once_charges_once(container: Container) -> None:
    """The completer may re-send an operation while its first attempt is still in flight:
    both answers are the one charge (the second waits for the first, then replays it)."""
    sandbox = container.gateways.for_payment("sandbox")
    request = ChargeRequest(
        payment_id="pay_sandboxledger0000000000",
        order_id="order-1",
        amount=1999,
        currency="usd",
        capture_method="automatic",
        payment_method="pm_card_visa",
        idempotency_key="op_sandboxledger00000000000",
    )
    answers = await asyncio.gather(*(sandbox.charge(request) for _ in range(4)))
    assert {a.reference for a in answers} == {answers[0].reference}
    assert {a.status for a in answers} == {GatewayPaymentStatus.CAPTURED}

    async def charges(session: AsyncSession) -> list[SandboxCharge]:
        return list(await session.scalars(select(SandboxCharge)))

    [charge] = await container.db.run(charges, write=False)
    assert (charge.reference, charge.amount_captured) == (answers[0].reference, 1999)
