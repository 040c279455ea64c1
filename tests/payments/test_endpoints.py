"""Each payment endpoint's success and error cases not covered in test_lifecycle.py, the
sandbox's magic tokens as the gateway ledger sees them, and the 404-not-403 rule."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api

MISSING = "pay_0000000000000000000000zz"


async def ledger(container: Container, payment_id: str) -> list[SandboxCharge]:
    async with container.db.transaction(write=False) as session:
        rows = await session.scalars(
            select(SandboxCharge).where(SandboxCharge.payment_id == payment_id)
        )
        return list(rows)


async def ledger_size(container: Container) -> int:
    async with container.db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(SandboxCharge)) or 0)


# -- POST /payments/intents ------------------------------------------------------------------


async def test_create_renders_the_whole_payment_object(api: Api) -> None:
    created = await api.create(
        amount=2500,
        currency="EUR",
        capture_method="manual",
        description="A hat",
        receipt_email="someone@example.com",
        payment_method="pm_card_visa",
    )
    assert set(created) == {
        "id", "object", "order_id", "customer_id", "amount", "amount_capturable",
        "amount_captured", "amount_refunded", "currency", "status", "capture_method",
        "payment_method", "failure", "cancellation_reason", "description", "metadata",
        "next_action", "disputed", "gateway", "gateway_reference", "created_at", "updated_at",
    }  # fmt: skip
    assert created["object"] == "payment"
    assert created["currency"] == "eur"
    assert (created["amount"], created["amount_capturable"], created["amount_captured"]) == (
        2500,
        0,
        0,
    )
    assert created["amount_refunded"] == 0
    assert created["capture_method"] == "manual"
    assert created["failure"] is None and created["cancellation_reason"] is None
    assert created["disputed"] is False
    assert created["gateway"] == "sandbox"
    assert "receipt_email" not in created
    assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]


async def test_admin_creates_for_customer_and_ids_are_random(api: Api) -> None:
    first = await api.create(ADMIN, customer_id="5", order_id="a")
    second = await api.create(ADMIN, customer_id="5", order_id="b")
    assert first["customer_id"] == "5"
    assert first["id"] != second["id"]
    assert len(first["id"]) == len("pay_") + 24


async def test_customer_may_name_itself_as_customer(api: Api) -> None:
    payment = await api.create(CUSTOMER, customer_id="17")
    assert payment["customer_id"] == "17"


# -- POST /payments/{id}/confirm --------------------------------------------------------------


@pytest.mark.parametrize("headers", [CUSTOMER, SERVICE, ADMIN], ids=["owner", "service", "admin"])
async def test_owner_service_and_admin_may_confirm(api: Api, headers: dict[str, str]) -> None:
    payment = await api.create()
    confirmed = await api.post(
        f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}, headers
    )
    assert confirmed["status"] == "captured"


async def test_visa_and_mastercard_land_in_the_ledger(api: Api, container: Container) -> None:
    for order, (method, brand, last4) in enumerate(
        [("pm_card_visa", "visa", "4242"), ("pm_card_mastercard", "mastercard", "4444")]
    ):
        payment = await api.paid(method, order_id=f"ok-{order}")
        assert payment["payment_method"]["brand"] == brand
        assert payment["payment_method"]["last4"] == last4
        assert payment["amount_capturable"] == 0
        (charge,) = await ledger(container, payment["id"])
        assert charge.status == "captured" and charge.amount_captured == 1999
        assert charge.reference == payment["gateway_reference"]


async def test_manual_confirm_authorizes(api: Api, container: Container) -> None:
    payment = await api.paid("pm_card_mastercard", capture_method="manual", amount=700)
    assert payment["status"] == "authorized"
    assert (payment["amount_capturable"], payment["amount_captured"]) == (700, 0)
    (charge,) = await ledger(container, payment["id"])
    assert charge.status == "authorized" and charge.amount_capturable == 700


@pytest.mark.parametrize(
    ("method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ],
)
async def test_decline_error_shape_and_ledger(
    api: Api, container: Container, method: str, code: str, decline_code: str
) -> None:
    payment = await api.create()
    error = (
        await api.post(f"/payments/{payment['id']}/confirm", {"payment_method": method}, status=402)
    )["error"]
    assert set(error) == {
        "type", "code", "message", "param", "request_id", "decline_code", "payment",
    }  # fmt: skip
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        code,
        decline_code,
    )
    failed = error["payment"]
    assert failed["failure"]["code"] == code
    assert failed["failure"]["message"]
    assert failed["amount_captured"] == 0
    assert failed["payment_method"]["brand"] == "visa"
    assert await api.get(f"/payments/{payment['id']}") == failed
    (charge,) = await ledger(container, payment["id"])
    assert charge.status == "failed" and charge.decline_code == decline_code
    # The order is not held by a failed payment: a new intent for it may be paid.
    retry = await api.paid()
    assert retry["status"] == "captured"


async def test_timeout_answers_202_and_holds_the_order(api: Api, container: Container) -> None:
    payment = await api.create()
    response = await api.client.post(
        f"/payments/{payment['id']}/confirm",
        json={"payment_method": "pm_card_timeout"},
        headers=CUSTOMER,
    )
    assert response.status == 202
    assert (await response.json())["status"] == "processing"
    second = await api.create()
    error = await api.post(
        f"/payments/{second['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
    )
    assert error["error"]["code"] == "order_already_paid"
    assert await ledger(container, second["id"]) == []


async def test_refund_fail_card_charges_normally(api: Api, container: Container) -> None:
    payment = await api.paid("pm_card_refundFail", capture_method="manual")
    assert payment["status"] == "authorized"
    assert payment["payment_method"]["last4"] == "5100"
    captured = await api.post(f"/payments/{payment['id']}/capture", {}, SERVICE)
    assert captured["status"] == "captured" and captured["amount_captured"] == 1999
    (charge,) = await ledger(container, payment["id"])
    assert charge.status == "captured"


async def test_unknown_token_never_reaches_the_ledger(api: Api, container: Container) -> None:
    payment = await api.create(payment_method="pm_card_nope")
    error = (await api.post(f"/payments/{payment['id']}/confirm", {}, status=422))["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_payment_method",
        "payment_method",
    )
    assert "pm_card_nope" not in error["message"]
    assert await ledger_size(container) == 0
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"


async def test_second_payment_of_a_paid_order_is_refused_without_gateway_call(
    api: Api, container: Container
) -> None:
    await api.paid(order_id="77")
    other = await api.create(order_id="77")
    error = (
        await api.post(
            f"/payments/{other['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
        )
    )["error"]
    assert (error["type"], error["code"]) == ("state_conflict", "order_already_paid")
    assert await ledger(container, other["id"]) == []
    assert (await api.get(f"/payments/{other['id']}"))["status"] == "pending"
    # An authorization holds the order too; cancelling it releases the order.
    held = await api.paid(capture_method="manual", order_id="78")
    blocked = await api.create(order_id="78")
    await api.post(
        f"/payments/{blocked['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
    )
    await api.post(f"/payments/{held['id']}/cancel")
    freed = await api.post(f"/payments/{blocked['id']}/confirm", {"payment_method": "pm_card_visa"})
    assert freed["status"] == "captured"


# -- POST /payments/{id}/capture --------------------------------------------------------------


async def test_admin_captures_everything_by_default(api: Api, container: Container) -> None:
    payment = await api.paid(capture_method="manual", amount=4200)
    captured = await api.post(f"/payments/{payment['id']}/capture", {}, ADMIN)
    assert (captured["status"], captured["amount_captured"], captured["amount_capturable"]) == (
        "captured",
        4200,
        0,
    )
    (charge,) = await ledger(container, payment["id"])
    assert (charge.status, charge.amount_captured) == ("captured", 4200)


@pytest.mark.parametrize("amount", [0, -5, 10.5, "100", True, None])
async def test_capture_amount_must_be_a_positive_integer(api: Api, amount: Any) -> None:
    payment = await api.paid(capture_method="manual")
    response = await api.client.post(
        f"/payments/{payment['id']}/capture", json={"amount_to_capture": amount}, headers=SERVICE
    )
    assert response.status == 422
    assert (await response.json())["error"]["param"] == "amount_to_capture"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "authorized"


async def test_capture_missing_payment_is_404(api: Api) -> None:
    error = await api.post(f"/payments/{MISSING}/capture", {}, SERVICE, status=404)
    assert error["error"]["type"] == "not_found"


# -- POST /payments/{id}/cancel ---------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["requested_by_customer", "duplicate", "fraudulent", "abandoned"]
)
async def test_cancel_reasons(api: Api, reason: str) -> None:
    payment = await api.create()
    cancelled = await api.post(f"/payments/{payment['id']}/cancel", {"reason": reason}, SERVICE)
    assert (cancelled["status"], cancelled["cancellation_reason"]) == ("cancelled", reason)


async def test_cancel_errors(api: Api) -> None:
    payment = await api.create()
    bad = await api.post(f"/payments/{payment['id']}/cancel", {"reason": "bored"}, status=422)
    assert bad["error"]["param"] == "reason"
    forbidden = await api.post(
        f"/payments/{payment['id']}/cancel", {"refund_if_captured": True}, status=403
    )
    assert forbidden["error"]["type"] == "permission_error"
    assert forbidden["error"]["param"] == "refund_if_captured"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"
    await api.post(f"/payments/{MISSING}/cancel", {}, ADMIN, status=404)


# -- GET /payments/{id} -----------------------------------------------------------------------


async def test_get_by_owner_service_admin_and_missing(api: Api) -> None:
    payment = await api.create()
    for headers in (CUSTOMER, SERVICE, ADMIN):
        assert (await api.get(f"/payments/{payment['id']}", headers))["id"] == payment["id"]
    error = await api.get(f"/payments/{MISSING}", ADMIN, status=404)
    assert error["error"]["code"] == "resource_missing"


# -- 404, never 403, for someone else's payment -----------------------------------------------

PER_PAYMENT = [
    ("GET", "", None),
    ("POST", "/confirm", {"payment_method": "pm_card_visa"}),
    ("POST", "/cancel", {}),
    ("POST", "/cancel", {"reason": "duplicate"}),
    ("POST", "/capture", {}),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"), PER_PAYMENT, ids=[f"{m}{s}" for m, s, _ in PER_PAYMENT]
)
async def test_not_yours_looks_exactly_like_missing(
    api: Api, container: Container, method: str, suffix: str, body: Any
) -> None:
    payment = await api.create(capture_method="manual")

    async def call(payment_id: str) -> tuple[int, dict[str, Any]]:
        response = await api.client.request(
            method, f"/payments/{payment_id}{suffix}", json=body, headers=OTHER_CUSTOMER
        )
        return response.status, await response.json()

    theirs_status, theirs = await call(payment["id"])
    missing_status, missing = await call(MISSING)
    assert theirs_status == missing_status
    assert theirs_status == (403 if suffix == "/capture" else 404)
    assert theirs["error"].pop("request_id") != missing["error"].pop("request_id")
    assert theirs == missing
    assert payment["id"] not in str(theirs)
    assert await api.get(f"/payments/{payment['id']}") == payment
    assert await ledger_size(container) == 0
