"""FailoverGateway with scripted fake gateways and a hand-driven clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from paysvc.gateways.base import (
    STRIPE_IDEMPOTENCY_WINDOW,
    CardDeclined,
    ChargeRequest,
    Decline,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    GatewayRejected,
    GatewayUnavailable,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.gateways.failover import FailoverGateway
from paysvc.gateways.stripe import StripeGateway
from tests.gateways.conftest import charge_request, free_port

T0 = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


@dataclass
class FakeClock:
    current: dt.datetime = T0

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)


@dataclass
class FakeGateway:
    """Charges succeed unless `fail_with` is set; remembers what it holds and what it was asked."""

    name: str
    fail_with: GatewayError | None = None
    health_error: GatewayError | None = None
    charges: list[ChargeRequest] = field(default_factory=list)
    held: dict[str, GatewayPayment] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    idempotency_window: dt.timedelta = STRIPE_IDEMPOTENCY_WINDOW

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        self.charges.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        payment = GatewayPayment(
            reference=f"pi_{self.name}_{len(self.charges)}",
            status=GatewayPaymentStatus.CAPTURED,
            amount=request.amount,
            amount_capturable=0,
            amount_captured=request.amount,
            currency=request.currency,
        )
        self.held[payment.reference] = payment
        return payment

    def _get(self, reference: str) -> GatewayPayment:
        if reference not in self.held:
            raise GatewayRejected(f"{self.name}: no such payment")
        return self.held[reference]

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        self.calls.append(f"capture {reference}")
        return self._get(reference)

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        self.calls.append(f"cancel {reference}")
        return self._get(reference)

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        self.calls.append(f"refund {request.payment_reference}")
        self._get(request.payment_reference)
        return GatewayRefund(
            "re_1", request.payment_reference, request.amount, GatewayRefundStatus.SUCCEEDED
        )

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        return self._get(reference)

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        if self.fail_with is not None:
            raise self.fail_with
        for request, payment in zip(self.charges, self.held.values(), strict=False):
            if request.payment_id == payment_id:
                return payment
        return None

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        raise GatewayRejected("no such refund")

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        return None

    async def check_health(self) -> None:
        if self.health_error is not None:
            raise self.health_error

    async def close(self) -> None:
        self.calls.append("close")


def failover(*gateways: FakeGateway, clock: FakeClock | None = None) -> FailoverGateway:
    return FailoverGateway(
        list(gateways),
        clock or FakeClock(),
        failure_threshold=3,
        reset_after=dt.timedelta(seconds=30),
    )


async def test_first_gateway_takes_the_charge_when_up() -> None:
    stripe, sandbox = FakeGateway("stripe"), FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)

    payment = await gateway.charge(charge_request())

    assert gateway.name == "stripe"
    assert payment.gateway == "stripe"
    assert (len(stripe.charges), len(sandbox.charges)) == (1, 0)


async def test_unavailable_first_gateway_fails_over_to_the_second() -> None:
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("connection refused"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)

    payment = await gateway.charge(charge_request())

    assert payment.gateway == "sandbox"
    assert payment.reference in sandbox.held
    assert (len(stripe.charges), len(sandbox.charges)) == (1, 1)
    assert gateway.gateway_for(payment.gateway) is sandbox


async def test_outcome_unknown_does_not_fail_over() -> None:
    stripe = FakeGateway("stripe", fail_with=OutcomeUnknown("timeout"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)

    with pytest.raises(OutcomeUnknown) as caught:
        await gateway.charge(charge_request())

    assert caught.value.gateway == "stripe"  # retry / reconcile there, nowhere else
    assert sandbox.charges == []


async def test_decline_does_not_fail_over_and_names_the_gateway() -> None:
    decline = Decline("card_declined", "insufficient_funds", "Declined.")
    failed = GatewayPayment("pi_x", GatewayPaymentStatus.FAILED, 100, 0, 0, "usd", decline=decline)
    stripe = FakeGateway("stripe", fail_with=CardDeclined(decline, failed))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)

    with pytest.raises(CardDeclined) as caught:
        await gateway.charge(charge_request())

    assert caught.value.payment is not None and caught.value.payment.gateway == "stripe"
    assert sandbox.charges == []


async def test_all_unavailable_raises_unavailable() -> None:
    gateway = failover(
        FakeGateway("stripe", fail_with=GatewayUnavailable("down")),
        FakeGateway("sandbox", fail_with=GatewayUnavailable("down too")),
    )

    with pytest.raises(GatewayUnavailable, match="stripe: down; sandbox: down too"):
        await gateway.charge(charge_request())


async def test_breaker_opens_after_threshold_and_stops_calling_the_dead_gateway() -> None:
    clock = FakeClock()
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("down"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox, clock=clock)

    for _ in range(3):
        await gateway.charge(charge_request())
    assert len(stripe.charges) == 3

    for _ in range(5):
        payment = await gateway.charge(charge_request())
        assert payment.gateway == "sandbox"
    assert len(stripe.charges) == 3  # circuit open: not called again
    assert len(sandbox.charges) == 8
    assert await gateway.health() == {
        "stripe": "circuit_open",
        "sandbox": "ok",
        "active": "sandbox",
    }


async def test_breaker_half_opens_after_reset_and_closes_on_success() -> None:
    clock = FakeClock()
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("down"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox, clock=clock)
    for _ in range(3):
        await gateway.charge(charge_request())

    clock.advance(29)
    await gateway.charge(charge_request())
    assert len(stripe.charges) == 3  # still open

    clock.advance(1)
    stripe.fail_with = None  # it came back
    payment = await gateway.charge(charge_request())  # the half-open trial

    assert payment.gateway == "stripe"
    assert len(stripe.charges) == 4
    assert (await gateway.charge(charge_request())).gateway == "stripe"  # closed again


async def test_failed_half_open_trial_opens_the_circuit_again() -> None:
    clock = FakeClock()
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("down"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox, clock=clock)
    for _ in range(3):
        await gateway.charge(charge_request())

    clock.advance(30)
    await gateway.charge(charge_request())  # one trial, fails at once
    assert len(stripe.charges) == 4
    await gateway.charge(charge_request())
    assert len(stripe.charges) == 4  # open again for another reset_after

    clock.advance(30)
    await gateway.charge(charge_request())
    assert len(stripe.charges) == 5


async def test_failures_must_be_consecutive() -> None:
    stripe = FakeGateway("stripe")
    gateway = failover(stripe, FakeGateway("sandbox"))
    for outcome in [
        GatewayUnavailable("x"),
        GatewayUnavailable("x"),
        None,
        GatewayUnavailable("x"),
    ]:
        stripe.fail_with = outcome
        await gateway.charge(charge_request())
    stripe.fail_with = None

    assert (await gateway.charge(charge_request())).gateway == "stripe"


async def test_later_operations_go_to_the_gateway_that_took_the_payment() -> None:
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("down"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)
    request = charge_request()
    payment = await gateway.charge(request)
    stripe.fail_with = None  # stripe is back; the payment still lives on the sandbox

    captured = await gateway.capture(payment.reference, 100, "k1")
    refund = await gateway.refund(
        RefundRequest("re_ours", payment.reference, 100, "usd", None, "k2")
    )
    found = await gateway.find_payment(request.payment_id)

    assert captured.gateway == "sandbox"
    assert refund.payment_reference == payment.reference
    assert sandbox.calls == [f"capture {payment.reference}", f"refund {payment.reference}"]
    assert stripe.calls == []
    assert found is not None and found.gateway == "sandbox"
    assert (await gateway.retrieve_payment(payment.reference)).gateway == "sandbox"


async def test_find_payment_cannot_say_none_while_a_gateway_is_unreachable() -> None:
    stripe = FakeGateway("stripe", fail_with=GatewayUnavailable("down"))
    gateway = failover(stripe, FakeGateway("sandbox"))

    with pytest.raises(GatewayUnavailable):
        await gateway.find_payment("pay_unknown")


async def test_health_and_check_health() -> None:
    stripe = FakeGateway("stripe", health_error=GatewayUnavailable("down"))
    sandbox = FakeGateway("sandbox")
    gateway = failover(stripe, sandbox)

    assert await gateway.health() == {"stripe": "unavailable", "sandbox": "ok", "active": "sandbox"}
    await gateway.check_health()  # the sandbox can take charges

    sandbox.health_error = GatewayUnavailable("down")
    with pytest.raises(GatewayUnavailable):
        await gateway.check_health()
    assert (await gateway.health())["active"] == "none"


async def test_gateway_for_unknown_name() -> None:
    gateway = failover(FakeGateway("stripe"))
    with pytest.raises(KeyError):
        gateway.gateway_for("paypal")


async def test_close_closes_every_gateway() -> None:
    stripe, sandbox = FakeGateway("stripe"), FakeGateway("sandbox")
    await failover(stripe, sandbox).close()
    assert (stripe.calls, sandbox.calls) == (["close"], ["close"])


async def test_unreachable_stripe_fails_over_for_real() -> None:
    """The real adapter's connection-refused error is what makes the failover move on."""
    stripe = StripeGateway("sk_test_x", api_base=f"http://127.0.0.1:{free_port()}")
    sandbox = FakeGateway("sandbox")
    gateway = FailoverGateway([stripe, sandbox], FakeClock())
    try:
        payment = await gateway.charge(charge_request())
    finally:
        await gateway.close()

    assert payment.gateway == "sandbox"
    assert len(sandbox.charges) == 1
