"""ORDER_VALIDATION=strict: every row of the contract's table, against an order service that
answers like the platform's own (`user_id`, `total` as a JSON number, upper-case currency)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paysvc.config import Settings
from paysvc.payments.models import Payment
from tests.conftest import CUSTOMER, SERVICE, Api, make_settings, token
from tests.platform_peers import Peers
from tests.support import count

PLATFORM_ORDER = {"id": 42, "user_id": 17, "total": 40.0, "currency": "USD", "status": "PENDING"}


@pytest.fixture
def settings(database_url: str, peer_url: str) -> Settings:
    return make_settings(database_url, ORDER_SERVICE_URL=peer_url, ORDER_VALIDATION="strict")


async def intent(api: Api, status: int, **body: Any) -> dict[str, Any]:
    payload = {"order_id": "42", "amount": 4000, "currency": "usd", **body}
    response = await api.client.post("/payments/intents", json=payload, headers=CUSTOMER)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def test_the_platforms_own_order_shape_is_accepted(api: Api, peers: Peers) -> None:
    peers.orders["42"] = PLATFORM_ORDER
    payment = await intent(api, 201)
    assert payment["status"] == "pending" and payment["amount"] == 4000
    # The caller's own token was forwarded.
    assert peers.lookups[-1]["Authorization"] == CUSTOMER["Authorization"]


@pytest.mark.parametrize(
    "order",
    [
        {"customer_id": "17", "amount": 4000, "currency": "usd", "status": "confirmed"},
        {"user_id": "17", "total": "40.00", "currency": "Usd", "status": "Pending"},
        {"user_id": 17, "total": 40, "currency": "USD", "status": "PENDING"},
    ],
)
async def test_other_accepted_shapes(api: Api, peers: Peers, order: dict[str, Any]) -> None:
    peers.orders["42"] = order
    await intent(api, 201)


async def test_a_service_caller_is_checked_against_the_customer_it_names(
    api: Api, peers: Peers
) -> None:
    peers.orders["42"] = PLATFORM_ORDER
    body = {"order_id": "42", "amount": 4000, "currency": "usd"}
    await api.create(SERVICE, status=201, customer_id="17", **body)
    assert peers.lookups[-1]["Authorization"] == SERVICE["Authorization"]
    missing = await api.create(SERVICE, status=422, customer_id="18", **body)
    assert missing["error"]["code"] == "order_not_found"


async def test_missing_and_someone_elses_order_look_the_same(api: Api, peers: Peers) -> None:
    missing = await intent(api, 422)
    peers.orders["42"] = {**PLATFORM_ORDER, "user_id": 99}
    theirs = await intent(api, 422)
    for body in (missing, theirs):
        error = body["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "order_not_found",
            "order_id",
        )
    assert {k: v for k, v in missing["error"].items() if k != "request_id"} == {
        k: v for k, v in theirs["error"].items() if k != "request_id"
    }
    assert await count_payments(api) == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"amount": 3999}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"amount": 40}, "amount"),  # 40 units is not 40.00 USD
    ],
)
async def test_amount_or_currency_mismatch(
    api: Api, peers: Peers, body: dict[str, Any], param: str
) -> None:
    peers.orders["42"] = PLATFORM_ORDER
    error = (await intent(api, 422, **body))["error"]
    assert (error["code"], error["param"]) == ("order_mismatch", param)
    assert await count_payments(api) == 0


async def test_a_total_in_a_zero_decimal_currency(api: Api, peers: Peers) -> None:
    peers.orders["42"] = {**PLATFORM_ORDER, "total": 500, "currency": "JPY"}
    await intent(api, 201, amount=500, currency="jpy")


@pytest.mark.parametrize("status", ["CANCELLED", "shipped", "PAID"])
async def test_an_order_that_is_not_payable(api: Api, peers: Peers, status: str) -> None:
    peers.orders["42"] = {**PLATFORM_ORDER, "status": status}
    error = (await intent(api, 409))["error"]
    assert (error["type"], error["code"]) == ("state_conflict", "order_not_payable")
    assert await count_payments(api) == 0


@pytest.mark.parametrize("answer", [500, 502, 503])
async def test_an_order_service_answering_5xx(api: Api, peers: Peers, answer: int) -> None:
    peers.orders["42"] = PLATFORM_ORDER
    peers.order_answer = answer
    await unavailable(api)


async def test_an_order_service_that_is_down(api: Api, peers: Peers, peer_server: Any) -> None:
    await peer_server.close()
    await unavailable(api)


async def test_a_slow_order_service(api: Api, peers: Peers) -> None:
    peers.orders["42"] = PLATFORM_ORDER
    peers.order_delay = asyncio.Event()  # never set: slower than the 5 s bound
    try:
        await unavailable(api)
    finally:
        peers.order_delay.set()


@pytest.mark.parametrize(
    "order",
    [
        ["not", "an", "object"],
        {"user_id": 17, "currency": "USD", "status": "PENDING"},  # no total
        {"user_id": 17, "total": "forty", "currency": "USD", "status": "PENDING"},
    ],
)
async def test_an_order_answer_we_cannot_read(api: Api, peers: Peers, order: Any) -> None:
    peers.orders["42"] = order  # type: ignore[assignment]
    await unavailable(api)


async def test_validation_off_by_default_needs_no_order_service(
    api: Api, peers: Peers, database_url: str, aiohttp_client: Any
) -> None:
    from paysvc.bootstrap import build_container
    from paysvc.web.app import create_app

    container = build_container(make_settings(database_url, ORDER_SERVICE_URL="http://127.0.0.1:9"))
    try:
        client = await aiohttp_client(create_app(container, own_container=False))
        response = await client.post(
            "/payments/intents",
            json={"order_id": "nowhere", "amount": 1, "currency": "usd"},
            headers={"Authorization": f"Bearer {token('17')}"},
        )
        assert response.status == 201
    finally:
        await container.close()
    assert peers.lookups == []


async def unavailable(api: Api) -> None:
    error = (await intent(api, 503))["error"]
    assert (error["type"], error["code"]) == ("api_error", "order_service_unavailable")
    assert await count_payments(api) == 0


async def count_payments(api: Api) -> int:
    from paysvc.web.keys import CONTAINER

    return await count(api.client.app[CONTAINER], Payment)
