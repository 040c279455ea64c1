"""Every call to a gateway, counted and timed: the one seam all gateway traffic passes.

`bootstrap` wraps each configured gateway (sandbox, stripe) in an `InstrumentedGateway` before
the failover chain sees it, so charges, captures, voids, refunds, look-ups and health checks are
all measured, labelled with the gateway that really answered. Anything else (a test reaching a
sandbox's ledger) is delegated to the wrapped gateway.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from paysvc.gateways.base import (
    CardDeclined,
    ChargeRequest,
    Gateway,
    GatewayPayment,
    GatewayRefund,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.metrics import Metrics

T = TypeVar("T")


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, CardDeclined | InvalidPaymentMethod):
        return "declined"
    if isinstance(error, GatewayRejected):
        return "rejected"
    if isinstance(error, GatewayUnavailable):
        return "unavailable"
    if isinstance(error, OutcomeUnknown):
        return "unknown"
    return "error"


class InstrumentedGateway:
    def __init__(self, inner: Gateway, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics

    async def _measure(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await call
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._metrics.gateway_latency.labels(self.name, operation).observe(
                time.perf_counter() - started
            )
            self._metrics.gateway_calls.labels(self.name, operation, outcome_of(error)).inc()

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        return await self._measure("charge", self.inner.charge(request))

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        return await self._measure(
            "capture", self.inner.capture(reference, amount, idempotency_key)
        )

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        return await self._measure("cancel", self.inner.cancel(reference, idempotency_key))

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        return await self._measure("refund", self.inner.refund(request))

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        return await self._measure("retrieve_payment", self.inner.retrieve_payment(reference))

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        return await self._measure("find_payment", self.inner.find_payment(payment_id))

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        return await self._measure("retrieve_refund", self.inner.retrieve_refund(reference))

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        return await self._measure("find_refund", self.inner.find_refund(refund_id))

    async def check_health(self) -> None:
        await self._measure("check_health", self.inner.check_health())

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
