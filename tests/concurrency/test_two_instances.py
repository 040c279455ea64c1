"""Two service instances (two containers, two apps, two engines) over one database race for
the same order, the same authorization and the same idempotency key."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.payments.models import Payment
from paysvc.web.app import create_app
from tests.concurrency.invariants import assert_money_invariants
from tests.concurrency.test_races import codes, post
from tests.conftest import SERVICE, Api
from tests.support import count


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[Container]:
    services = build_container(settings)
    yield services
    await services.close()


@pytest.fixture
async def apis(api: Api, second: Container, aiohttp_client: Callable[..., Any]) -> tuple[Api, Api]:
    return api, Api(await aiohttp_client(create_app(second, own_container=False)))


async def test_two_instances_confirm_one_order_once(
    apis: tuple[Api, Api], container: Container
) -> None:
    one, two = apis
    intents = [await (one if n % 2 else two).create(order_id="shared") for n in range(10)]
    replies = await asyncio.gather(
        *(
            post(
                (one if n % 2 else two).client,
                f"/payments/{p['id']}/confirm",
                {"payment_method": "pm_card_visa"},
            )
            for n, p in enumerate(intents)
        )
    )
    assert codes(replies) == {(200, None): 1, (409, "order_already_paid"): 9}
    assert await count(container, SandboxCharge) == 1
    await assert_money_invariants(container)


async def test_two_instances_capture_one_authorization_once(
    apis: tuple[Api, Api], container: Container
) -> None:
    one, two = apis
    payment = await one.paid(capture_method="manual")
    path = f"/payments/{payment['id']}/capture"
    replies = await asyncio.gather(
        *(post((one if n % 2 else two).client, path, {}, SERVICE) for n in range(10))
    )
    statuses = Counter(status for status, _ in replies)
    assert statuses[200] == 1 and statuses[409] == 9, codes(replies)
    assert (await two.get(f"/payments/{payment['id']}"))["status"] == "captured"
    await assert_money_invariants(container)


async def test_two_instances_share_idempotency_keys(
    apis: tuple[Api, Api], container: Container
) -> None:
    one, two = apis
    body = {"order_id": "k", "amount": 500, "currency": "usd"}
    replies = await asyncio.gather(
        *(
            post((one if n % 2 else two).client, "/payments/intents", body, key="k")
            for n in range(10)
        )
    )
    assert {status for status, _ in replies} <= {201, 409}
    assert len({b["id"] for status, b in replies if status == 201}) == 1
    assert await count(container, Payment) == 1
