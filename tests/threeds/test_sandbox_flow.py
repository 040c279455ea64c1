"""3-D Secure with the sandbox through the real HTTP stack: confirm -> requires_action, the
sandbox's challenge page, Complete/Fail, the re-confirm, cancel, the order hold."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from paysvc.config import Settings
from paysvc.payments.models import Payment
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api, make_settings
from tests.support import rows
from tests.threeds.helpers import (
    RETURN_URL,
    THREE_DS,
    answer,
    answer_at_gateway,
    challenges,
    charges,
    page_path,
    reconfirm,
    requires_action,
    status_changes,
)

PUBLIC_URL = "http://127.0.0.1:8765"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, PUBLIC_URL=PUBLIC_URL)


async def test_confirm_answers_requires_action_with_the_sandbox_page(
    api: Api, container: Container
) -> None:
    payment = await requires_action(api)
    action = payment["next_action"]
    assert action["type"] == "redirect_to_url"
    url = action["redirect_to_url"]["url"]
    assert url.startswith(PUBLIC_URL + "/sandbox/3ds/")
    assert len(url.rsplit("/", 1)[1]) >= 40  # an unguessable token
    assert action["redirect_to_url"]["return_url"] == RETURN_URL
    assert payment["amount_captured"] == 0 and payment["amount_capturable"] == 0
    assert payment["failure"] is None
    assert await api.get(f"/payments/{payment['id']}") == payment
    # One charge at the sandbox, waiting; one challenge, its token stored only hashed/encrypted.
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "requires_action"
    (challenge,) = await challenges(container, charge.reference)
    token = url.rsplit("/", 1)[1]
    assert challenge.token_enc is not None and token not in challenge.token_enc
    assert token not in challenge.token_hash
    # The URL is stored encrypted on the payment too, never in clear.
    (row,) = await rows(container, Payment, Payment.id == payment["id"])
    assert row.next_action_enc is not None and token not in row.next_action_enc
    assert await status_changes(container, payment["id"]) == [("pending", "requires_action")]


async def test_the_page_shows_amount_and_merchant_with_a_strict_policy(
    api: Api, client: TestClient[Any, Any]
) -> None:
    payment = await requires_action(api, amount=123456, currency="EUR")
    response = await client.get(page_path(payment))  # the customer's browser: no token
    assert response.status == 200
    assert response.content_type == "text/html"
    text = await response.text()
    assert "1234.56 EUR" in text
    assert "paysvc sandbox shop" in text
    assert ">Complete</button>" in text and ">Fail</button>" in text
    assert "<script" not in text and "http" not in text.split("<body>", 1)[1]  # nothing external
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert "form-action 'self' http://localhost:5173;" in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_complete_captures_and_returns_the_browser_to_the_shop(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await requires_action(api)
    location = await answer(client, payment, "complete")
    target = urlsplit(location)
    assert location.startswith("http://localhost:5173/checkout/done?")
    assert parse_qs(target.query) == {
        "cart": ["7"],
        "payment_id": [payment["id"]],
        "redirect_status": ["succeeded"],
    }
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured"
    assert settled["amount_captured"] == 1999
    assert settled["next_action"] is None
    assert settled["payment_method"]["last4"] == "3184"
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "captured" and charge.amount_captured == 1999
    (challenge,) = await challenges(container, charge.reference)
    assert challenge.outcome == "succeeded" and challenge.decided_at is not None
    assert await status_changes(container, payment["id"]) == [
        ("pending", "requires_action"),
        ("requires_action", "captured"),
    ]
    # A captured payment can be refunded as usual.
    refund = await api.post(f"/payments/{payment['id']}/refunds", {}, SERVICE, status=201)
    assert refund["status"] == "succeeded"


async def test_fail_fails_the_payment_with_authentication_failure(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await requires_action(api)
    location = await answer(client, payment, "fail")
    assert parse_qs(urlsplit(location).query)["redirect_status"] == ["failed"]
    failed = await api.get(f"/payments/{payment['id']}")
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "payment_intent_authentication_failure"
    assert failed["next_action"] is None
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "failed" and charge.amount_captured == 0
    # The order is free again: a new intent for it can be paid.
    again = await api.paid(order_id=payment["order_id"])
    assert again["status"] == "captured"


async def test_manual_capture_is_authorized_after_complete(
    api: Api, client: TestClient[Any, Any]
) -> None:
    payment = await requires_action(api, capture_method="manual")
    await answer(client, payment, "complete")
    authorized = await api.get(f"/payments/{payment['id']}")
    assert authorized["status"] == "authorized"
    assert authorized["amount_capturable"] == 1999 and authorized["amount_captured"] == 0
    captured = await api.post(
        f"/payments/{payment['id']}/capture", {"amount_to_capture": 1500}, SERVICE
    )
    assert captured["status"] == "captured" and captured["amount_captured"] == 1500


async def test_without_return_url_the_page_ends_on_its_own_message(
    api: Api, client: TestClient[Any, Any]
) -> None:
    payment = await requires_action(api, return_url=None)
    assert payment["next_action"]["redirect_to_url"]["return_url"] is None
    response = await client.post(page_path(payment), data={"outcome": "complete"})
    assert response.status == 200
    assert "You can close this window" in await response.text()
    assert "form-action 'self';" in response.headers["Content-Security-Policy"]
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"


async def test_the_first_answer_stands(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await requires_action(api)
    await answer(client, payment, "complete")
    location = await answer(client, payment, "fail")  # the back button, then Fail
    assert parse_qs(urlsplit(location).query)["redirect_status"] == ["succeeded"]
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "captured"
    page = await client.get(page_path(payment))
    assert "no longer awaits authentication" in await page.text()


async def test_unknown_token_and_bad_answer(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await requires_action(api)
    guessed = "/sandbox/3ds/" + "A" * 43
    assert (await client.get(guessed)).status == 404
    assert (await client.post(guessed, data={"outcome": "complete"})).status == 404
    bad = await client.post(page_path(payment), data={"outcome": "maybe"})
    assert bad.status == 400
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "requires_action"
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "requires_action"


async def test_reconfirm_before_authentication_changes_nothing_and_never_charges(
    api: Api, container: Container
) -> None:
    payment = await requires_action(api)
    again = await reconfirm(api, payment["id"])
    assert again["status"] == "requires_action"
    assert again["next_action"] == payment["next_action"]
    assert len(await charges(container, payment["id"])) == 1
    # A new payment method or return_url is not a re-confirm: 409, nothing sent.
    for body in ({"payment_method": "pm_card_visa"}, {"return_url": "https://shop.example/r"}):
        await api.post(f"/payments/{payment['id']}/confirm", body, status=409)
    assert len(await charges(container, payment["id"])) == 1
    # Strangers cannot see it; staff can re-confirm it.
    await api.post(f"/payments/{payment['id']}/confirm", None, OTHER_CUSTOMER, status=404)
    assert (await api.post(f"/payments/{payment['id']}/confirm", None, ADMIN))[
        "status"
    ] == "requires_action"


async def test_reconfirm_settles_what_the_customer_did(api: Api, container: Container) -> None:
    """The page's own settlement was lost (say, the instance died right after the sandbox
    recorded the answer): the owner's empty confirm asks the gateway and settles."""
    done = await requires_action(api)
    declined = await requires_action(api, order_id="2042")
    for payment, passed in ((done, True), (declined, False)):
        await answer_at_gateway(container, payment, passed)
    captured = await reconfirm(api, done["id"])
    assert captured["status"] == "captured" and captured["next_action"] is None
    error = (await reconfirm(api, declined["id"], status=402))["error"]
    assert error["type"] == "card_error"
    assert error["code"] == "payment_intent_authentication_failure"
    assert error["payment"]["status"] == "failed"
    assert len(await charges(container, done["id"])) == 1
    assert len(await charges(container, declined["id"])) == 1
    # Settled payments are not confirmable again.
    await reconfirm(api, done["id"], status=409)


async def test_requires_action_holds_the_order(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    second = await api.create()
    error = (
        await api.post(
            f"/payments/{second['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
        )
    )["error"]
    assert error["code"] == "order_already_paid"
    assert await charges(container, second["id"]) == []
    # Released once the first one is cancelled.
    await api.post(f"/payments/{payment['id']}/cancel", {"reason": "abandoned"})
    paid = await api.post(f"/payments/{second['id']}/confirm", {"payment_method": "pm_card_visa"})
    assert paid["status"] == "captured"


async def test_cancel_requires_action_cancels_at_the_gateway(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await requires_action(api)
    cancelled = await api.post(f"/payments/{payment['id']}/cancel", {"reason": "abandoned"})
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation_reason"] == "abandoned"
    assert cancelled["next_action"] is None
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "canceled"
    # The page is finished; a late Complete changes nothing.
    page = await client.get(page_path(payment))
    assert "no longer awaits authentication" in await page.text()
    await answer(client, payment, "complete")
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "cancelled"
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "canceled" and charge.amount_captured == 0
    assert await status_changes(container, payment["id"]) == [
        ("pending", "requires_action"),
        ("requires_action", "cancelled"),
    ]


async def test_cancel_after_the_customer_completed_is_a_conflict(
    api: Api, container: Container
) -> None:
    """The customer completed while our copy still said requires_action: the cancel finds the
    gateway captured, records it, and answers 409; nothing is voided."""
    payment = await requires_action(api)
    await answer_at_gateway(container, payment, True)
    error = (await api.post(f"/payments/{payment['id']}/cancel", {}, status=409))["error"]
    assert error["type"] == "state_conflict"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"


@pytest.mark.parametrize(
    "url",
    [
        "http://shop.example.com/done",
        "ftp://localhost/done",
        "javascript:alert(1)",
        "https://user:pw@shop.example.com/",
        "/relative/path",
        "https://",
        "http://localhost:99999/",
        "https://shop.example.com/a b",
    ],
)
async def test_return_url_must_be_https_or_local_http(
    api: Api, container: Container, url: str
) -> None:
    payment = await api.create()
    error = (
        await api.post(
            f"/payments/{payment['id']}/confirm",
            {"payment_method": THREE_DS, "return_url": url},
            status=422,
        )
    )["error"]
    assert error["param"] == "return_url"
    assert await charges(container, payment["id"]) == []
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"


@pytest.mark.parametrize(
    "url", ["https://shop.example.com/done?x=1", "http://127.0.0.1:3000/r", "http://[::1]/r"]
)
async def test_return_url_accepted(api: Api, url: str) -> None:
    payment = await requires_action(api, return_url=url)
    assert payment["next_action"]["redirect_to_url"]["return_url"] == url


async def test_an_ordinary_card_ignores_return_url(api: Api) -> None:
    payment = await api.create()
    paid = await api.post(
        f"/payments/{payment['id']}/confirm",
        {"payment_method": "pm_card_visa", "return_url": "https://shop.example.com/done"},
    )
    assert paid["status"] == "captured" and paid["next_action"] is None


async def test_admin_cannot_set_requires_action(api: Api) -> None:
    payment = await api.create()
    error = (
        await api.client.put(
            f"/admin/payments/{payment['id']}/status",
            json={"status": "requires_action", "reason": "test"},
            headers=ADMIN,
        )
    ).status
    assert error == 409


async def test_the_page_is_not_served_without_the_sandbox(
    database_url: str, aiohttp_client: Any
) -> None:
    from paysvc.bootstrap import build_container
    from paysvc.web.app import create_app

    settings = make_settings(
        database_url, PAYMENT_GATEWAY="stripe", STRIPE_SECRET_KEY="sk_test_not_used"
    )
    services = build_container(settings)
    try:
        client = await aiohttp_client(create_app(services, own_container=False))
        response = await client.get("/sandbox/3ds/" + "A" * 43, headers=CUSTOMER)
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found"
    finally:
        await services.close()
