"""Races through the real HTTP stack, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge
from tests.concurrency.invariants import assert_money_invariants
from tests.conftest import CUSTOMER, SERVICE, Api, auth
from tests.support import count

Reply = tuple[int, dict[str, Any]]


async def post(
    client: TestClient[Any, Any],
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] = CUSTOMER,
    key: str | None = None,
) -> Reply:
    extra = {"Idempotency-Key": key} if key else {}
    response = await client.post(path, json=body, headers={**headers, **extra})
    return response.status, await response.json()


def codes(replies: list[Reply]) -> Counter[tuple[int, str | None]]:
    return Counter((status, body.get("error", {}).get("code")) for status, body in replies)


async def test_ten_intents_for_one_order_confirmed_at_once_charge_once(
    api: Api, container: Container
) -> None:
    intents = [await api.create(order_id="order-1") for _ in range(10)]
    replies = await asyncio.gather(
        *(
            post(api.client, f"/payments/{p['id']}/confirm", {"payment_method": "pm_card_visa"})
            for p in intents
        )
    )
    assert codes(replies) == {(200, None): 1, (409, "order_already_paid"): 9}
    assert await count(container, SandboxCharge) == 1
    statuses = Counter([(await api.get(f"/payments/{p['id']}"))["status"] for p in intents])
    assert statuses == {"captured": 1, "pending": 9}
    await assert_money_invariants(container)


async def test_a_declined_order_can_be_paid_by_another_intent_once(
    api: Api, container: Container
) -> None:
    declined = await api.create(order_id="order-2")
    await api.post(
        f"/payments/{declined['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        status=402,
    )
    intents = [await api.create(order_id="order-2") for _ in range(5)]
    replies = await asyncio.gather(
        *(
            post(api.client, f"/payments/{p['id']}/confirm", {"payment_method": "pm_card_visa"})
            for p in intents
        )
    )
    assert codes(replies) == {(200, None): 1, (409, "order_already_paid"): 4}
    await assert_money_invariants(container)


async def test_ten_concurrent_captures_capture_once(api: Api, container: Container) -> None:
    payment = await api.paid(capture_method="manual")
    assert payment["status"] == "authorized"
    replies = await asyncio.gather(
        *(
            post(
                api.client,
                f"/payments/{payment['id']}/capture",
                {"amount_to_capture": 1500},
                SERVICE,
            )
            for _ in range(10)
        )
    )
    assert [s for s, _ in replies].count(200) == 1
    assert all(s in (200, 409) for s, _ in replies), codes(replies)
    assert {b["error"]["type"] for s, b in replies if s == 409} == {"state_conflict"}
    final = await api.get(f"/payments/{payment['id']}")
    assert (final["status"], final["amount_captured"]) == ("captured", 1500)
    await assert_money_invariants(container)


async def test_confirm_racing_cancel_ends_in_one_consistent_state(
    api: Api, container: Container
) -> None:
    outcomes: Counter[tuple[int, int, str]] = Counter()
    for round_ in range(8):
        payment = await api.create(order_id=f"race-{round_}")
        confirm, cancel = await asyncio.gather(
            post(
                api.client, f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}
            ),
            post(api.client, f"/payments/{payment['id']}/cancel", {}),
        )
        final = (await api.get(f"/payments/{payment['id']}"))["status"]
        outcomes[(confirm[0], cancel[0], final)] += 1
    # Exactly one of the two wins; the loser sees a state conflict.
    assert set(outcomes) <= {(200, 409, "captured"), (409, 200, "cancelled")}, outcomes
    await assert_money_invariants(container)


async def test_capture_racing_cancel_of_an_authorization(api: Api, container: Container) -> None:
    outcomes: Counter[tuple[int, int, str]] = Counter()
    for round_ in range(8):
        payment = await api.paid(order_id=f"auth-{round_}", capture_method="manual")
        capture, cancel = await asyncio.gather(
            post(api.client, f"/payments/{payment['id']}/capture", {}, SERVICE),
            post(api.client, f"/payments/{payment['id']}/cancel", {}, SERVICE),
        )
        final = (await api.get(f"/payments/{payment['id']}"))["status"]
        outcomes[(capture[0], cancel[0], final)] += 1
    assert set(outcomes) <= {(200, 409, "captured"), (409, 200, "cancelled")}, outcomes
    await assert_money_invariants(container)


CARDS = [
    ("pm_card_visa", {200}),
    ("pm_card_mastercard", {200}),
    ("pm_card_chargeDeclined", {402}),
    ("pm_card_chargeDeclinedInsufficientFunds", {402}),
    ("pm_card_timeout", {202}),
    ("pm_card_refundFail", {200}),
]


async def test_a_hundred_concurrent_flows_keep_every_invariant(
    api: Api, container: Container
) -> None:
    """100 create+confirm(+capture) flows from 5 customers: 60 orders of their own and 40 flows
    fighting over 10 shared orders; some manual, some declined, some timing out."""
    customers = [auth(str(n)) for n in range(1, 6)]
    cards = itertools.cycle(CARDS)
    replies: list[tuple[str, int, str | None]] = []

    async def flow(n: int) -> None:
        headers = customers[n % len(customers)]
        order = f"shared-{n % 10}" if n < 40 else f"own-{n}"
        manual = n % 4 == 0
        method, _ = next(cards)
        status, created = await post(
            api.client,
            "/payments/intents",
            {
                "order_id": order,
                "amount": 100 + n,
                "currency": "usd",
                "capture_method": "manual" if manual else "automatic",
            },
            headers,
            key=f"create-{n}",
        )
        replies.append(("create", status, None))
        if status != 201:
            return
        path = f"/payments/{created['id']}"
        status, body = await post(
            api.client, path + "/confirm", {"payment_method": method}, headers, key=f"confirm-{n}"
        )
        replies.append(("confirm", status, body.get("error", {}).get("code")))
        if status == 200 and manual:
            status, body = await post(api.client, path + "/capture", {}, SERVICE, key=f"cap-{n}")
            replies.append(("capture", status, body.get("error", {}).get("code")))
        if status == 200:  # captured (automatic) or just captured (manual)
            # Three racing partial refunds of 40% each: at most two fit.
            amount = (100 + n) * 2 // 5
            results = await asyncio.gather(
                *(
                    post(
                        api.client,
                        path + "/refunds",
                        {"amount": amount},
                        SERVICE,
                        key=f"re-{n}-{i}",
                    )
                    for i in range(3)
                )
            )
            for status, body in results:
                replies.append(("refund", status, body.get("error", {}).get("code")))

    await asyncio.gather(*(flow(n) for n in range(100)))
    assert not [r for r in replies if r[1] >= 500], replies
    kinds = Counter((kind, status, code) for kind, status, code in replies)
    assert kinds[("create", 201, None)] == 100
    allowed_confirm = {200, 202, 402, 409}
    assert all(s in allowed_confirm for k, s, _ in replies if k == "confirm"), kinds
    assert all(c == "order_already_paid" for k, s, c in replies if k == "confirm" and s == 409)
    assert all(s == 200 for k, s, _ in replies if k == "capture"), kinds
    refunds = [(s, c) for k, s, c in replies if k == "refund"]
    assert refunds and all(s == 201 or c == "amount_exceeds_refundable" for s, c in refunds), kinds
    assert any(s == 422 for s, _ in refunds), "the racing refunds never over-asked"
    await assert_money_invariants(container)
