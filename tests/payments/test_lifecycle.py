"""The payment lifecycle through HTTP: create, confirm, capture, cancel, read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.payments.models import PaymentEvent
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api, auth


async def test_create_confirm_get(api: Api) -> None:
    created = await api.create(metadata={"cart": "c1"}, description="Two socks")
    assert created["status"] == "pending"
    assert created["id"].startswith("pay_")
    assert created["customer_id"] == "17"
    assert created["gateway_reference"] is None
    assert created["metadata"] == {"cart": "c1"}

    confirmed = await api.post(
        f"/payments/{created['id']}/confirm", {"payment_method": "pm_card_visa"}
    )
    assert confirmed["status"] == "captured"
    assert confirmed["amount_captured"] == 1999
    assert confirmed["payment_method"] == {
        "type": "card",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2034,
    }
    assert confirmed["gateway_reference"].startswith("pi_")
    fetched = await api.get(f"/payments/{created['id']}")
    assert fetched == confirmed


async def test_manual_capture_partial_releases_rest(api: Api) -> None:
    payment = await api.paid(capture_method="manual", amount=5000)
    assert payment["status"] == "authorized"
    assert payment["amount_capturable"] == 5000
    captured = await api.post(
        f"/payments/{payment['id']}/capture", {"amount_to_capture": 3000}, SERVICE
    )
    assert captured["status"] == "captured"
    assert captured["amount_captured"] == 3000
    assert captured["amount_capturable"] == 0


async def test_capture_more_than_capturable_is_422(api: Api) -> None:
    payment = await api.paid(capture_method="manual", amount=5000)
    error = await api.post(
        f"/payments/{payment['id']}/capture", {"amount_to_capture": 5001}, SERVICE, status=422
    )
    assert error["error"]["param"] == "amount_to_capture"
    again = await api.get(f"/payments/{payment['id']}")
    assert again["status"] == "authorized"


async def test_customer_may_not_capture(api: Api) -> None:
    payment = await api.paid(capture_method="manual")
    error = await api.post(f"/payments/{payment['id']}/capture", {}, CUSTOMER, status=403)
    assert error["error"]["type"] == "permission_error"


async def test_cancel_authorization_voids_at_gateway(api: Api, container: Container) -> None:
    payment = await api.paid(capture_method="manual")
    cancelled = await api.post(
        f"/payments/{payment['id']}/cancel", {"reason": "requested_by_customer"}
    )
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation_reason"] == "requested_by_customer"
    async with container.db.transaction(write=False) as session:
        charge = await session.scalar(
            select(SandboxCharge).where(SandboxCharge.payment_id == payment["id"])
        )
    assert charge is not None and charge.status == "canceled"


async def test_cancel_pending_and_captured(api: Api) -> None:
    pending = await api.create()
    assert (await api.post(f"/payments/{pending['id']}/cancel"))["status"] == "cancelled"
    captured = await api.paid(order_id="2")
    error = await api.post(f"/payments/{captured['id']}/cancel", status=409)
    assert error["error"]["type"] == "state_conflict"


async def test_declines_return_402_with_failed_payment(api: Api) -> None:
    cases = {
        "pm_card_chargeDeclined": ("card_declined", "generic_decline"),
        "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
        "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card"),
    }
    for number, (method, (code, decline_code)) in enumerate(cases.items()):
        payment = await api.create(order_id=f"decline-{number}")
        error = (
            await api.post(
                f"/payments/{payment['id']}/confirm", {"payment_method": method}, status=402
            )
        )["error"]
        assert error["type"] == "card_error"
        assert error["code"] == code
        assert error["decline_code"] == decline_code
        assert error["payment"]["status"] == "failed"
        assert error["payment"]["failure"]["decline_code"] == decline_code
        again = await api.post(
            f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
        )
        assert again["error"]["type"] == "state_conflict"


async def test_mastercard_and_unknown_token(api: Api) -> None:
    payment = await api.paid("pm_card_mastercard")
    assert payment["payment_method"]["brand"] == "mastercard"
    assert payment["payment_method"]["last4"] == "4444"
    other = await api.create(order_id="x")
    error = await api.post(
        f"/payments/{other['id']}/confirm", {"payment_method": "pm_card_bogus"}, status=422
    )
    assert error["error"]["code"] == "invalid_payment_method"
    assert (await api.get(f"/payments/{other['id']}"))["status"] == "pending"
    retried = await api.post(f"/payments/{other['id']}/confirm", {"payment_method": "pm_card_visa"})
    assert retried["status"] == "captured"


async def test_timeout_goes_processing_and_ledger_knows_truth(
    api: Api, container: Container
) -> None:
    payment = await api.paid("pm_card_timeout")
    assert payment["status"] == "processing"
    assert payment["gateway_reference"] is None
    truth = await container.gateways.primary.find_payment(payment["id"])
    assert truth is not None and truth.status == "captured" and truth.amount_captured == 1999


async def test_refund_fail_card_succeeds_payment(api: Api) -> None:
    payment = await api.paid("pm_card_refundFail")
    assert payment["status"] == "captured"


async def test_payment_method_set_at_creation(api: Api) -> None:
    payment = await api.create(payment_method="pm_card_visa")
    assert payment["payment_method"] is None
    confirmed = await api.post(f"/payments/{payment['id']}/confirm", {})
    assert confirmed["status"] == "captured"
    missing = await api.create(order_id="no-pm")
    error = await api.post(f"/payments/{missing['id']}/confirm", {}, status=422)
    assert error["error"]["param"] == "payment_method"


async def test_other_customer_gets_identical_404(api: Api) -> None:
    payment = await api.create()
    theirs = await api.get(f"/payments/{payment['id']}", OTHER_CUSTOMER, status=404)
    missing = await api.get("/payments/pay_doesnotexist", OTHER_CUSTOMER, status=404)
    for body in (theirs, missing):
        body["error"].pop("request_id")
    assert theirs == missing
    await api.post(
        f"/payments/{payment['id']}/confirm",
        {"payment_method": "pm_card_visa"},
        OTHER_CUSTOMER,
        status=404,
    )
    assert (await api.get(f"/payments/{payment['id']}", SERVICE))["status"] == "pending"


async def test_service_creates_for_customer(api: Api) -> None:
    payment = await api.create(SERVICE, customer_id="55")
    assert payment["customer_id"] == "55"
    error = await api.create(SERVICE, status=422)
    assert error["error"]["param"] == "customer_id"
    forbidden = await api.create(CUSTOMER, customer_id="55", status=403)
    assert forbidden["error"]["type"] == "permission_error"
    await api.get(f"/payments/{payment['id']}", auth("55"))


async def test_every_status_change_is_historied(api: Api, container: Container) -> None:
    payment = await api.paid(capture_method="manual")
    await api.post(f"/payments/{payment['id']}/capture", {}, ADMIN)
    async with container.db.transaction(write=False) as session:
        events = list(
            await session.scalars(
                select(PaymentEvent)
                .where(PaymentEvent.payment_id == payment["id"])
                .order_by(PaymentEvent.created_at)
            )
        )
    moves: list[Any] = [(e.from_status, e.to_status) for e in events]
    assert moves == [(None, "pending"), ("pending", "authorized"), ("authorized", "captured")]
