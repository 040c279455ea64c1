"""StripeGateway against tiny fake Stripe servers (real SDK, real HTTP on 127.0.0.1).

For what localstripe lacks (idempotency keys, search, amount_received, decline_code and the
PaymentIntent in card errors, refund reasons, 3-D Secure) and for the failure modes that decide
between GatewayUnavailable (certainly not done) and OutcomeUnknown (maybe done).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from paysvc.gateways.base import (
    CardDeclined,
    CardDetails,
    GatewayPaymentStatus,
    GatewayRefundStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    NextAction,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.gateways.stripe import StripeGateway
from tests.gateways.conftest import TEST_KEY, FakeStripe, charge_request, free_port, intent_json

PI = "/v1/payment_intents"


def stripe_error(status: int, **error: Any) -> tuple[dict[str, Any], int]:
    return {"error": {"type": "invalid_request_error", **error}}, status


# -- what we send ------------------------------------------------------------------------------


async def test_charge_sends_only_what_stripe_needs_with_our_idempotency_key(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply("POST", PI, intent_json(status="succeeded", amount_received=1999))
    request = charge_request(currency="EUR", metadata={"cart": "42"})

    payment = await fake_gateway.charge(request)

    (call,) = fake_stripe.calls("POST", PI)
    assert call.headers["Idempotency-Key"] == request.idempotency_key
    assert call.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert call.form == {
        "amount": "1999",
        "currency": "eur",
        "capture_method": "automatic",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "metadata[cart]": "42",
        "metadata[paysvc_payment_id]": request.payment_id,
        "metadata[order_id]": request.order_id,
        "expand[0]": "payment_method",
    }
    assert payment.status is GatewayPaymentStatus.CAPTURED
    assert payment.card == CardDetails("mastercard", "4444", 3, 2031)


async def test_our_ids_win_over_client_metadata(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply("POST", PI, intent_json())
    request = charge_request(metadata={"paysvc_payment_id": "pay_spoofed"})

    await fake_gateway.charge(request)

    assert fake_stripe.calls("POST", PI)[0].form["metadata[paysvc_payment_id]"] == (
        request.payment_id
    )


async def test_partial_capture_sends_amount_and_key_and_reads_amount_received(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply(
        "POST",
        f"{PI}/pi_fake123/capture",
        intent_json(amount=1000, amount_received=600, amount_capturable=0),
    )

    payment = await fake_gateway.capture("pi_fake123", 600, "pay_1:capture")

    (call,) = fake_stripe.calls("POST", f"{PI}/pi_fake123/capture")
    assert call.headers["Idempotency-Key"] == "pay_1:capture"
    assert call.form["amount_to_capture"] == "600"
    assert (payment.status, payment.amount_captured, payment.amount_capturable) == (
        GatewayPaymentStatus.CAPTURED,
        600,
        0,
    )


async def test_cancel_sends_the_key(fake_stripe: FakeStripe, fake_gateway: StripeGateway) -> None:
    fake_stripe.reply(
        "POST", f"{PI}/pi_fake123/cancel", intent_json(status="canceled", amount_received=0)
    )

    payment = await fake_gateway.cancel("pi_fake123", "pay_1:cancel")

    assert fake_stripe.calls("POST", f"{PI}/pi_fake123/cancel")[0].headers["Idempotency-Key"] == (
        "pay_1:cancel"
    )
    assert payment.status is GatewayPaymentStatus.CANCELED


@pytest.mark.parametrize(
    ("reason", "sent"),
    [("duplicate", "duplicate"), ("fraudulent", "fraudulent"), ("abandoned", None), (None, None)],
)
async def test_refund_sends_stripe_reasons_only(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway, reason: str | None, sent: str | None
) -> None:
    fake_stripe.reply(
        "POST",
        "/v1/refunds",
        {
            "id": "re_s1",
            "object": "refund",
            "amount": 500,
            "status": "pending",
            "payment_intent": "pi_fake123",
            "failure_reason": None,
        },
    )

    refund = await fake_gateway.refund(
        RefundRequest("re_ours", "pi_fake123", 500, "usd", reason, "re_ours:create")
    )

    (call,) = fake_stripe.calls("POST", "/v1/refunds")
    assert call.headers["Idempotency-Key"] == "re_ours:create"
    expected = {
        "payment_intent": "pi_fake123",
        "amount": "500",
        "metadata[paysvc_refund_id]": "re_ours",
    }
    if sent:
        expected["reason"] = sent
    assert call.form == expected
    assert (refund.status, refund.reference) == (GatewayRefundStatus.PENDING, "re_s1")


async def test_failed_refund_is_reported(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply(
        "GET",
        "/v1/refunds/re_s2",
        {
            "id": "re_s2",
            "object": "refund",
            "amount": 100,
            "status": "failed",
            "payment_intent": "pi_fake123",
            "failure_reason": "expired_or_canceled_card",
        },
    )

    refund = await fake_gateway.retrieve_refund("re_s2")

    assert (refund.status, refund.failure_reason) == (
        GatewayRefundStatus.FAILED,
        "expired_or_canceled_card",
    )


# -- what Stripe answers that localstripe does not ---------------------------------------------


async def test_decline_carries_decline_code_and_the_payment_intent(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    failed_intent = intent_json(
        status="requires_payment_method",
        amount_received=0,
        payment_method=None,
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "payment_method": {
                "id": "pm_x",
                "card": {"brand": "visa", "last4": "9995", "exp_month": 1, "exp_year": 2030},
            },
        },
    )
    body, status = stripe_error(
        402,
        type="card_error",
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        payment_intent=failed_intent,
    )
    fake_stripe.reply("POST", PI, body, status)

    with pytest.raises(CardDeclined) as caught:
        await fake_gateway.charge(charge_request())

    assert caught.value.decline.code == "card_declined"
    assert caught.value.decline.decline_code == "insufficient_funds"
    payment = caught.value.payment
    assert payment is not None
    assert (payment.reference, payment.status) == ("pi_fake123", GatewayPaymentStatus.FAILED)
    assert payment.card == CardDetails("visa", "9995", 1, 2030)
    assert payment.decline == caught.value.decline
    assert len(fake_stripe.requests) == 1  # no lookup needed


async def test_authentication_required_with_return_url_is_a_redirect(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    hooks = "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_x"
    fake_stripe.reply(
        "POST",
        PI,
        intent_json(
            status="requires_action",
            amount_received=0,
            next_action={
                "type": "redirect_to_url",
                "redirect_to_url": {"url": hooks, "return_url": "https://shop.example/done"},
            },
        ),
    )

    payment = await fake_gateway.charge(charge_request(return_url="https://shop.example/done"))

    (call,) = fake_stripe.calls("POST", PI)
    assert call.form["return_url"] == "https://shop.example/done"
    assert call.form["automatic_payment_methods[enabled]"] == "true"
    assert "automatic_payment_methods[allow_redirects]" not in call.form  # redirects allowed
    assert payment.status is GatewayPaymentStatus.REQUIRES_ACTION
    assert payment.next_action == NextAction(
        "redirect_to_url", url=hooks, return_url="https://shop.example/done"
    )
    assert payment.decline is None and payment.amount_captured == 0


async def test_authentication_for_stripe_js_is_passed_through(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    """Without a return_url Stripe asks Stripe.js to handle it: `use_stripe_sdk`, type only."""
    fake_stripe.reply(
        "POST",
        PI,
        intent_json(
            status="requires_action",
            amount_received=0,
            next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure"}},
        ),
    )

    payment = await fake_gateway.charge(charge_request())

    assert "return_url" not in fake_stripe.calls("POST", PI)[0].form
    assert payment.status is GatewayPaymentStatus.REQUIRES_ACTION
    assert payment.next_action == NextAction("use_stripe_sdk")
    assert payment.next_action.as_dict() == {"type": "use_stripe_sdk"}


async def test_failed_authentication_reads_as_a_failed_payment(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    error = {
        "code": "payment_intent_authentication_failure",
        "message": "The provided PaymentMethod has failed authentication.",
    }
    fake_stripe.reply(
        "GET",
        f"{PI}/pi_fake123",
        intent_json(status="requires_payment_method", amount_received=0, last_payment_error=error),
    )

    payment = await fake_gateway.retrieve_payment("pi_fake123")

    assert payment.status is GatewayPaymentStatus.FAILED
    assert payment.decline is not None
    assert payment.decline.code == "payment_intent_authentication_failure"
    assert payment.next_action is None


async def test_missing_payment_method_as_stripe_says_it(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    body, status = stripe_error(
        400, code="resource_missing", param="payment_method", message="No such PaymentMethod"
    )
    fake_stripe.reply("POST", PI, body, status)

    with pytest.raises(InvalidPaymentMethod):
        await fake_gateway.charge(charge_request(payment_method="pm_nope"))


async def test_other_invalid_request_is_rejected(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    body, status = stripe_error(400, code="amount_too_small", param="amount", message="Too small")
    fake_stripe.reply("POST", PI, body, status)

    with pytest.raises(GatewayRejected, match="amount_too_small"):
        await fake_gateway.charge(charge_request(amount=1))


async def test_find_payment_uses_search(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply(
        "GET",
        f"{PI}/search",
        {
            "object": "search_result",
            "has_more": False,
            "url": f"{PI}/search",
            "data": [intent_json(id="pi_old", created=1), intent_json(id="pi_new", created=2)],
        },
    )

    found = await fake_gateway.find_payment("pay_abc")

    (call,) = fake_stripe.calls("GET", f"{PI}/search")
    assert call.query["query"] == "metadata['paysvc_payment_id']:'pay_abc'"
    assert found is not None and found.reference == "pi_new"
    assert not fake_stripe.calls("GET", PI)


async def test_find_payment_lists_recent_intents_when_search_lags(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    fake_stripe.reply(
        "GET", f"{PI}/search", {"object": "search_result", "has_more": False, "data": []}
    )
    pages = {
        None: [intent_json(id="pi_a", metadata={"paysvc_payment_id": "pay_other"})],
        "pi_a": [intent_json(id="pi_b", metadata={"paysvc_payment_id": "pay_abc"})],
    }

    async def list_page(request: web.Request) -> web.StreamResponse:
        data = pages[request.query.get("starting_after")]
        return web.json_response(
            {"object": "list", "url": PI, "data": data, "has_more": data[0]["id"] == "pi_a"}
        )

    fake_stripe.on("GET", PI, list_page)

    found = await fake_gateway.find_payment("pay_abc")

    assert found is not None and found.reference == "pi_b"
    assert len(fake_stripe.calls("GET", PI)) == 2


# -- failures: unavailable (certainly not done) or unknown (maybe done) ------------------------


@pytest.mark.parametrize("status", [401, 403, 429])
async def test_auth_permission_and_rate_limit_are_unavailable(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway, status: int
) -> None:
    body, _ = stripe_error(status, message="Invalid API Key provided: sk_test_****************abcd")
    fake_stripe.reply("POST", PI, body, status)

    with pytest.raises(GatewayUnavailable) as caught:
        await fake_gateway.charge(charge_request())

    assert "sk_test" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_unknown(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway, status: int
) -> None:
    fake_stripe.reply("POST", PI, {"error": {"type": "api_error", "message": "boom"}}, status)

    with pytest.raises(OutcomeUnknown):
        await fake_gateway.charge(charge_request())


async def test_idempotency_key_in_use_is_unknown(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    body, status = stripe_error(409, type="idempotency_error", code="idempotency_key_in_use")
    fake_stripe.reply("POST", PI, body, status)

    with pytest.raises(OutcomeUnknown):
        await fake_gateway.charge(charge_request())


async def test_idempotency_error_is_unknown_never_rejected(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    """Stripe's IdempotencyError says the key *was* used: whatever it did may have happened
    (issue 9, case 7). Settled by lookup, never treated as "nothing happened"."""
    body, status = stripe_error(400, type="idempotency_error", code=None)
    fake_stripe.reply("POST", "/v1/refunds", body, status)

    with pytest.raises(OutcomeUnknown, match="idempotency key already used"):
        await fake_gateway.refund(
            RefundRequest("re_1", "pi_fake123", 500, "usd", None, idempotency_key="op_1")
        )


async def test_capture_answer_without_the_captured_amount_records_what_was_asked(
    fake_stripe: FakeStripe, fake_gateway: StripeGateway
) -> None:
    answer = intent_json(amount=1000, amount_capturable=0)
    del answer["amount_received"]
    fake_stripe.reply("POST", f"{PI}/pi_fake123/capture", answer)

    payment = await fake_gateway.capture("pi_fake123", 600, "op_capture")
    assert (payment.status, payment.amount_captured) == (GatewayPaymentStatus.CAPTURED, 600)


async def test_connection_refused_is_unavailable() -> None:
    gateway = StripeGateway(TEST_KEY, api_base=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(GatewayUnavailable, match="could not connect"):
            await gateway.charge(charge_request())
        with pytest.raises(GatewayUnavailable):
            await gateway.check_health()
    finally:
        await gateway.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections, reads the request, never answers."""
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await never.wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    never.set()
    await server.close()


async def test_no_answer_is_unknown(silent_server: str) -> None:
    gateway = StripeGateway(TEST_KEY, api_base=silent_server, timeout_seconds=0.3)
    try:
        with pytest.raises(OutcomeUnknown):
            await gateway.charge(charge_request())
        with pytest.raises(GatewayUnavailable):  # health turns anything into unavailable
            await gateway.check_health()
    finally:
        await gateway.close()


@pytest.fixture
async def hang_up_server() -> AsyncIterator[str]:
    """Reads the request, then closes the connection without a word."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    sock: socket.socket = server.sockets[0]
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_connection_lost_mid_request_is_unknown(hang_up_server: str) -> None:
    gateway = StripeGateway(TEST_KEY, api_base=hang_up_server, timeout_seconds=2)
    try:
        with pytest.raises(OutcomeUnknown):
            await gateway.charge(charge_request())
    finally:
        await gateway.close()
