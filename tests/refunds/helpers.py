"""Shared helpers for refund tests: HTTP shortcuts and ledger read-backs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.payments.models import Payment
from paysvc.refunds.models import Refund
from tests.conftest import SERVICE, Api


async def refund(
    api: Api, payment_id: str, headers: dict[str, str] | None = None, status: int = 201, **body: Any
) -> dict[str, Any]:
    return await api.post(f"/payments/{payment_id}/refunds", body, headers or SERVICE, status)


@dataclass(frozen=True)
class Books:
    """What each ledger says about one payment's refunds."""

    payment_refunded: int
    payment_captured: int
    payment_status: str
    refunds_succeeded: int
    refunds_pending: int
    refund_rows: int
    gateway_charge_refunded: int
    gateway_refunds_succeeded: int


async def books(container: Container, payment_id: str) -> Books:
    async with container.db.transaction(write=False) as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None

        async def total(status: str) -> int:
            query = select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.payment_id == payment_id, Refund.status == status
            )
            return int(await session.scalar(query) or 0)

        rows = await session.scalar(
            select(func.count()).select_from(Refund).where(Refund.payment_id == payment_id)
        )
        charge = await session.scalar(
            select(SandboxCharge).where(SandboxCharge.payment_id == payment_id)
        )
        assert charge is not None
        gateway_succeeded = await session.scalar(
            select(func.coalesce(func.sum(SandboxRefund.amount), 0)).where(
                SandboxRefund.charge_reference == charge.reference,
                SandboxRefund.status == "succeeded",
            )
        )
        return Books(
            payment_refunded=payment.amount_refunded,
            payment_captured=payment.amount_captured,
            payment_status=payment.status,
            refunds_succeeded=await total("succeeded"),
            refunds_pending=await total("pending"),
            refund_rows=int(rows or 0),
            gateway_charge_refunded=charge.amount_refunded,
            gateway_refunds_succeeded=int(gateway_succeeded or 0),
        )


def assert_books_agree(ledgers: Books) -> None:
    assert ledgers.payment_refunded <= ledgers.payment_captured
    assert ledgers.payment_refunded == ledgers.refunds_succeeded
    assert ledgers.payment_refunded == ledgers.gateway_charge_refunded
    assert ledgers.payment_refunded == ledgers.gateway_refunds_succeeded
