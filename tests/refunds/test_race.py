"""Concurrent refunds through the real HTTP stack never refund more than was captured,
and every ledger (payment, refunds table, gateway) agrees afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from tests.conftest import ADMIN, SERVICE, Api
from tests.refunds.helpers import assert_books_agree, books


async def _refund(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> int:
    response = await client.post(path, json=body, headers=SERVICE)
    data = await response.json()
    if response.status == 201:
        assert data["status"] == "succeeded", data
    else:
        assert data["error"]["code"] == "amount_exceeds_refundable", data
    return response.status


async def test_forty_concurrent_partial_refunds(api: Api, container: Container) -> None:
    payment = await api.paid(amount=10_000)
    path = f"/payments/{payment['id']}/refunds"
    statuses = await asyncio.gather(
        *(_refund(api.client, path, {"amount": 300}) for _ in range(40))
    )
    assert all(s in (201, 422) for s in statuses), statuses
    assert statuses.count(201) == 33  # 33 x 300 = 9 900 <= 10 000 < 34 x 300
    ledgers = await books(container, payment["id"])
    assert ledgers.payment_refunded == 9_900
    assert ledgers.payment_status == "partially_refunded"
    assert ledgers.refund_rows == 33
    assert ledgers.refunds_pending == 0
    assert_books_agree(ledgers)

    last = await api.post(path, {}, SERVICE, status=201)
    assert last["amount"] == 100
    ledgers = await books(container, payment["id"])
    assert (ledgers.payment_refunded, ledgers.payment_status) == (10_000, "refunded")
    assert_books_agree(ledgers)


async def test_concurrent_full_refunds_and_cancels(api: Api, container: Container) -> None:
    """Default-amount refunds and cancel-with-refund racing: exactly one takes the rest."""
    payment = await api.paid(amount=5_000)
    await api.post(f"/payments/{payment['id']}/refunds", {"amount": 1_000}, SERVICE, status=201)

    async def full_refund() -> int:
        response = await api.client.post(
            f"/payments/{payment['id']}/refunds", json={}, headers=SERVICE
        )
        return response.status

    async def cancel() -> int:
        response = await api.client.post(
            f"/payments/{payment['id']}/cancel", json={"refund_if_captured": True}, headers=ADMIN
        )
        return response.status

    statuses = await asyncio.gather(*(full_refund() if i % 2 else cancel() for i in range(20)))
    assert all(s < 500 for s in statuses), statuses
    ledgers = await books(container, payment["id"])
    assert ledgers.refund_rows == 2
    assert (ledgers.payment_refunded, ledgers.payment_status) == (5_000, "refunded")
    assert_books_agree(ledgers)
