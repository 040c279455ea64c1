"""`POST /orders/{order_id}/cancel`: every payment of the order is settled through the payment
and refund services, the gateway's ledger agrees, a second call changes nothing, a processing
payment is settled by the completer, and racing requests keep every money invariant."""

from __future__ import annotations

import asyncio
from typing import Any

from paysvc.bootstrap import Container
from paysvc.events.models import Event
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.refunds.models import Refund
from tests.concurrency.invariants import assert_money_invariants
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api
from tests.support import ManualClock, count, rows


async def create(api: Api, order_id: str, **body: Any) -> dict[str, Any]:
    return await api.create(SERVICE, customer_id="17", order_id=order_id, **body)


async def confirm(api: Api, payment: dict[str, Any], method: str, status: int = 200) -> Any:
    return await api.post(
        f"/payments/{payment['id']}/confirm", {"payment_method": method}, SERVICE, status
    )


async def cancel_order(
    api: Api, order_id: str, headers: dict[str, str] | None = None, status: int = 200
) -> dict[str, Any]:
    return await api.post(
        f"/orders/{order_id}/cancel", {"reason": "abandoned"}, headers or SERVICE, status
    )


async def charge_status(container: Container, payment_id: str) -> str:
    (charge,) = await rows(container, SandboxCharge, SandboxCharge.payment_id == payment_id)
    return str(charge.status)


async def test_every_payment_of_the_order_is_released_or_given_back(
    api: Api, container: Container
) -> None:
    pending = await create(api, "ord-1")
    failed = await create(api, "ord-1")
    await confirm(api, failed, "pm_card_chargeDeclined", 402)
    captured = await create(api, "ord-1")
    await confirm(api, captured, "pm_card_visa")
    await api.post(f"/payments/{captured['id']}/refunds", {"amount": 500}, SERVICE, 201)
    authorized = await create(api, "ord-2", capture_method="manual")
    await confirm(api, authorized, "pm_card_visa")

    result = await cancel_order(api, "ord-1")
    assert result["object"] == "order_cancellation" and result["order_id"] == "ord-1"
    statuses = {p["id"]: p["status"] for p in result["payments"]}
    assert statuses == {
        pending["id"]: "cancelled",
        failed["id"]: "failed",
        captured["id"]: "refunded",
    }
    assert sorted((r["amount"], r["status"]) for r in result["refunds"]) == [
        (500, "succeeded"),
        (1499, "succeeded"),
    ]
    voided = await cancel_order(api, "ord-2", ADMIN)
    assert [p["status"] for p in voided["payments"]] == ["cancelled"]
    assert voided["refunds"] == []
    assert await charge_status(container, authorized["id"]) == "canceled"
    assert await charge_status(container, captured["id"]) == "captured"
    await assert_money_invariants(container)  # our rows and the gateway ledger agree

    # A second call changes nothing more: no refund, no event, the same answer.
    events, refunds = await count(container, Event), await count(container, Refund)
    again = await cancel_order(api, "ord-1")
    assert again == result
    assert (await count(container, Event), await count(container, Refund)) == (events, refunds)


async def test_idempotency_key_replays_and_roles(api: Api) -> None:
    payment = await create(api, "ord-3")
    headers = {**SERVICE, "Idempotency-Key": "cancel-ord-3"}
    first = await api.client.post("/orders/ord-3/cancel", json={}, headers=headers)
    second = await api.client.post("/orders/ord-3/cancel", json={}, headers=headers)
    assert first.status == second.status == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await first.json() == await second.json()
    assert (await api.get(f"/payments/{payment['id']}", SERVICE))["status"] == "cancelled"
    error = (await cancel_order(api, "ord-3", CUSTOMER, 403))["error"]
    assert error["type"] == "permission_error"
    bad = await api.post("/orders/ord-3/cancel", {"reason": "bored"}, SERVICE, 422)
    assert bad["error"]["param"] == "reason"


async def test_a_processing_payment_is_refunded_once_its_outcome_is_known(
    api: Api, container: Container, clock: ManualClock
) -> None:
    payment = await create(api, "ord-4")
    await confirm(api, payment, "pm_card_timeout", 202)
    result = await cancel_order(api, "ord-4")
    assert [p["status"] for p in result["payments"]] == ["processing"]
    clock.advance(120)  # stuck for over a minute: the background pass settles it
    await container.reconcile.run_once()
    settled = await api.get(f"/payments/{payment['id']}", SERVICE)
    assert settled["status"] == "refunded" and settled["amount_refunded"] == 1999
    await assert_money_invariants(container)
    assert (await cancel_order(api, "ord-4"))["payments"][0]["status"] == "refunded"


async def test_racing_the_cancellation_with_confirms_and_refunds(
    api: Api, container: Container
) -> None:
    confirming = [await create(api, f"race-c-{i}") for i in range(6)]
    refunding = [await create(api, f"race-r-{i}") for i in range(6)]
    for payment in refunding:
        await confirm(api, payment, "pm_card_visa")

    async def confirm_any(payment: dict[str, Any]) -> int:
        response = await api.client.post(
            f"/payments/{payment['id']}/confirm",
            json={"payment_method": "pm_card_visa"},
            headers=SERVICE,
        )
        return response.status

    async def refund_any(payment: dict[str, Any]) -> int:
        response = await api.client.post(
            f"/payments/{payment['id']}/refunds", json={"amount": 700}, headers=SERVICE
        )
        return response.status

    async def cancel_any(order_id: str) -> int:
        response = await api.client.post(f"/orders/{order_id}/cancel", json={}, headers=SERVICE)
        return response.status

    results = await asyncio.gather(
        *(confirm_any(p) for p in confirming),
        *(cancel_any(p["order_id"]) for p in confirming),
        *(refund_any(p) for p in refunding),
        *(cancel_any(p["order_id"]) for p in refunding),
    )
    assert set(results) <= {200, 201, 409, 422}, results
    assert results.count(200) >= 12  # every cancellation answered 200
    for payment in confirming + refunding:
        now = await api.get(f"/payments/{payment['id']}", SERVICE)
        # The cancelled order holds no money, whoever won.
        assert now["status"] in ("cancelled", "refunded"), now
        assert now["amount_captured"] == now["amount_refunded"]
    await assert_money_invariants(container)
