"""Shared helpers for refund tests: HTTP shortcuts and ledger read-backs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from paysvc.bootstrap import Container, build_container
from paysvc.clock import Clock
from paysvc.gateways.base import GatewayError, GatewayRefund, OutcomeUnknown, RefundRequest
from paysvc.gateways.sandbox import SandboxCharge, SandboxGateway, SandboxRefund
from paysvc.operations.completer import Completer
from paysvc.operations.repository import OperationRepository
from paysvc.operations.service import Ledger
from paysvc.payments.models import Payment
from paysvc.refunds.models import Refund
from paysvc.web.app import create_app
from tests.conftest import SERVICE, Api


async def refund(
    api: Api, payment_id: str, headers: dict[str, str] | None = None, status: int = 201, **body: Any
) -> dict[str, Any]:
    return await api.post(f"/payments/{payment_id}/refunds", body, headers or SERVICE, status)


class Troubled:
    """The sandbox gateway, except that refunds run into `failure`: after the sandbox did the
    refund (`reached=True`: the answer was lost) or before it got there."""

    def __init__(self, inner: Any, failure: type[GatewayError], *, reached: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.failure = failure
        self.reached = reached

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        if self.reached:
            await self.inner.refund(request)
        raise self.failure("simulated")


async def troubled_api(
    aiohttp_client: Callable[..., Any],
    container: Container,
    failure: type[GatewayError],
    *,
    reached: bool,
    clock: Clock | None = None,
) -> Api:
    """An Api over the same database (another instance) whose refunds go through a Troubled
    sandbox."""
    troubled = build_container(
        dataclasses.replace(container.settings, reconcile_interval=0),  # no background pass
        clock=clock or container.clock,
        wrap_gateway=lambda gateway: Troubled(gateway, failure, reached=reached),
    )
    return Api(await aiohttp_client(create_app(troubled)))


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


def sandbox(container: Container) -> SandboxGateway:
    gateway = getattr(container.gateways.for_payment("sandbox"), "inner", None)
    assert isinstance(gateway, SandboxGateway)
    return gateway


async def lost_refund(
    aiohttp_client: Callable[..., Any],
    container: Container,
    payment_id: str,
    amount: int,
    *,
    reached: bool = True,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """A refund left `pending` because the gateway's answer was lost (`reached`: the gateway
    did it) or the call never arrived."""
    flaky = await troubled_api(
        aiohttp_client, container, OutcomeUnknown, reached=reached, clock=clock
    )
    pending = await refund(flaky, payment_id, amount=amount)
    assert pending["status"] == "pending"
    return pending


async def operation_of(container: Container, refund_id: str) -> str:
    """The id of the ledger operation that makes a refund."""
    async with container.db.transaction(write=False) as session:
        op = await OperationRepository(session).for_refund(refund_id)
        assert op is not None
        return op.id


def completer_at(container: Container, clock: Clock) -> Completer:
    """A completer (another instance's, say) that sees time through `clock`."""
    ledger = Ledger(container.gateways, clock, container.settings.timing)
    return Completer(container.db, ledger, container.payments, clock)
