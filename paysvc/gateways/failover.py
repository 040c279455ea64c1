"""Several gateways behind one: new charges fail over, existing payments stay where they are.

`charge()` tries the gateways in order, skipping those whose circuit is open, and moves on to the
next one ONLY on `GatewayUnavailable`: that error promises the request never took effect. It never
moves on after `OutcomeUnknown` (a timeout, a lost connection, a 5xx): that charge may have
happened, and charging the same order on a second gateway could take the customer's money twice.
The unknown outcome goes back to the caller, stamped with the gateway that may hold the charge
(`GatewayError.gateway`), to be retried with the same idempotency key on that gateway, or
reconciled with it.

Every later operation on an existing payment belongs to the gateway that took it. Each payment
this class returns names that gateway (`GatewayPayment.gateway`); callers store it with the
payment and address the gateway directly with `gateway_for(name)`. The `Gateway` methods that
take a reference also work here: they first find which gateway knows the reference (one read per
gateway, in order), so they cost an extra round trip; `gateway_for` is the direct path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from paysvc.clock import Clock
from paysvc.gateways.base import (
    CardDeclined,
    ChargeRequest,
    Gateway,
    GatewayError,
    GatewayPayment,
    GatewayRefund,
    GatewayRejected,
    GatewayUnavailable,
    OutcomeUnknown,
    RefundRequest,
)

T = TypeVar("T")


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """closed -> open after `threshold` consecutive unavailability failures -> half-open once
    `reset_after` has passed (the next call is a trial: success closes, failure re-opens)."""

    threshold: int
    reset_after: dt.timedelta
    failures: int = 0
    opened_at: dt.datetime | None = None

    def state(self, now: dt.datetime) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if now - self.opened_at >= self.reset_after:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allows(self, now: dt.datetime) -> bool:
        return self.state(now) is not CircuitState.OPEN

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_unavailable(self, now: dt.datetime) -> None:
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = now  # a failed half-open trial opens the circuit again


class FailoverGateway:
    def __init__(
        self,
        gateways: Sequence[Gateway],
        clock: Clock,
        failure_threshold: int = 3,
        reset_after: dt.timedelta = dt.timedelta(seconds=30),
    ) -> None:
        if not gateways:
            raise ValueError("FailoverGateway needs at least one gateway")
        names = [gateway.name for gateway in gateways]
        if len(set(names)) != len(names):
            raise ValueError("FailoverGateway: gateway names must be unique")
        self.gateways = list(gateways)
        self.name = names[0]
        # A charge may land on any of them: the shortest window is the one that holds.
        self.idempotency_window = min(gateway.idempotency_window for gateway in gateways)
        self.clock = clock
        self.breakers = {name: CircuitBreaker(failure_threshold, reset_after) for name in names}

    def gateway_for(self, name: str) -> Gateway:
        """The gateway that holds a payment, by the name stored with it."""
        for gateway in self.gateways:
            if gateway.name == name:
                return gateway
        raise KeyError(f"no gateway named {name!r}")

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        unavailable: list[str] = []
        for gateway in self.gateways:
            breaker = self.breakers[gateway.name]
            if not breaker.allows(self.clock.now()):
                unavailable.append(f"{gateway.name}: circuit open")
                continue
            try:
                payment = await gateway.charge(request)
            except GatewayUnavailable as exc:  # certainly not charged: try the next gateway
                breaker.record_unavailable(self.clock.now())
                unavailable.append(f"{gateway.name}: {exc}")
                continue
            except OutcomeUnknown as exc:  # maybe charged: never fail over (see module doc)
                exc.gateway = gateway.name
                raise
            except CardDeclined as exc:  # the gateway works; the card does not
                breaker.record_success()
                exc.gateway = gateway.name
                if exc.payment is not None:
                    exc.payment = replace(exc.payment, gateway=gateway.name)
                raise
            except GatewayError as exc:
                breaker.record_success()
                exc.gateway = gateway.name
                raise
            breaker.record_success()
            return replace(payment, gateway=gateway.name)
        raise GatewayUnavailable("no gateway available: " + "; ".join(unavailable))

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        gateway = await self._owner_of_payment(reference)
        payment = await _stamped(gateway, gateway.capture(reference, amount, idempotency_key))
        return replace(payment, gateway=gateway.name)

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        gateway = await self._owner_of_payment(reference)
        payment = await _stamped(gateway, gateway.cancel(reference, idempotency_key))
        return replace(payment, gateway=gateway.name)

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        gateway = await self._owner_of_payment(request.payment_reference)
        return await _stamped(gateway, gateway.refund(request))

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        gateway, payment = await self._locate(reference)
        return replace(payment, gateway=gateway.name)

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        """Asks every gateway: a charge may have landed on any of them. None only when all
        of them answered that they have nothing; if one could not answer, that is an error."""

        async def find(gateway: Gateway) -> GatewayPayment | None:
            found = await gateway.find_payment(payment_id)
            return None if found is None else replace(found, gateway=gateway.name)

        return await self._first_found(find)

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        failures: list[GatewayError] = []
        for gateway in self.gateways:
            try:
                return await gateway.retrieve_refund(reference)
            except (GatewayRejected, GatewayUnavailable) as exc:
                failures.append(exc)
        raise _not_found_anywhere(failures, f"refund {reference}")

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        async def find(gateway: Gateway) -> GatewayRefund | None:
            return await gateway.find_refund(refund_id)

        return await self._first_found(find)

    async def health(self) -> dict[str, str]:
        """Each gateway's status (`ok`, `unavailable`, `circuit_open`) and the `active` one: the
        gateway that would take a new charge now (`none` when no gateway would)."""
        now = self.clock.now()

        async def probe(gateway: Gateway) -> str:
            if not self.breakers[gateway.name].allows(now):
                return "circuit_open"
            try:
                await gateway.check_health()
            except GatewayError:
                return "unavailable"
            return "ok"

        statuses = await asyncio.gather(*(probe(gateway) for gateway in self.gateways))
        report = {g.name: status for g, status in zip(self.gateways, statuses, strict=True)}
        report["active"] = next(
            (g.name for g, status in zip(self.gateways, statuses, strict=True) if status == "ok"),
            "none",
        )
        return report

    async def check_health(self) -> None:
        """Unavailable only when no gateway could take a new charge."""
        report = await self.health()
        if report["active"] == "none":
            raise GatewayUnavailable(
                "no gateway available: "
                + ", ".join(f"{g.name} {report[g.name]}" for g in self.gateways)
            )

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()

    async def _owner_of_payment(self, reference: str) -> Gateway:
        if len(self.gateways) == 1:
            return self.gateways[0]
        gateway, _ = await self._locate(reference)
        return gateway

    async def _locate(self, reference: str) -> tuple[Gateway, GatewayPayment]:
        """The gateway that knows this payment reference (asked in order), and its answer."""
        failures: list[GatewayError] = []
        for gateway in self.gateways:
            try:
                return gateway, await gateway.retrieve_payment(reference)
            except (GatewayRejected, GatewayUnavailable) as exc:
                failures.append(exc)
        raise _not_found_anywhere(failures, f"payment {reference}")

    async def _first_found(self, find: Callable[[Gateway], Awaitable[T | None]]) -> T | None:
        unreachable: list[str] = []
        for gateway in self.gateways:
            try:
                found = await find(gateway)
            except (GatewayUnavailable, OutcomeUnknown) as exc:
                unreachable.append(f"{gateway.name}: {exc}")
                continue
            if found is not None:
                return found
        if unreachable:
            raise GatewayUnavailable("could not ask every gateway: " + "; ".join(unreachable))
        return None


async def _stamped(gateway: Gateway, call: Awaitable[T]) -> T:
    """Await a call on one gateway, naming that gateway on any error it raises."""
    try:
        return await call
    except GatewayError as exc:
        exc.gateway = gateway.name
        raise


def _not_found_anywhere(failures: list[GatewayError], what: str) -> GatewayError:
    """Unknown to every gateway that answered -> rejected; if one could not answer, unavailable."""
    if len(failures) == 1:
        return failures[0]  # one gateway: its own answer says more
    if any(isinstance(exc, GatewayUnavailable) for exc in failures):
        return GatewayUnavailable(f"{what}: not found on the gateways that answered")
    return GatewayRejected(f"{what}: no gateway knows it")
