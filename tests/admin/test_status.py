"""PUT /admin/payments/{id}/status through HTTP: the allowed corrections and their money
fields, the refused ones, history and audit, validation, roles, idempotency and a race."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import update

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.operations.models import Operation
from paysvc.payments.models import Payment
from tests.admin.conftest import audit_of, history, put_status
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api
from tests.refunds.helpers import refund
from tests.support import rows

_orders = itertools.count(1)
REASON = "support ticket 4711: bank confirms"
FIELDS = ("amount_capturable", "amount_captured", "amount_refunded")


async def make(api: Api, status: str, **body: Any) -> dict[str, Any]:
    """A payment (1999 usd) brought to `status` through the API."""
    body = {"order_id": f"order-{next(_orders)}", **body}
    if status == "pending":
        return await api.create(**body)
    if status == "processing":
        return await api.paid("pm_card_timeout", **body)
    if status == "authorized":
        return await api.paid(capture_method="manual", **body)
    if status == "failed":
        payment = await api.create(**body)
        declined = await api.post(
            f"/payments/{payment['id']}/confirm",
            {"payment_method": "pm_card_chargeDeclined"},
            status=402,
        )
        return declined["error"]["payment"]  # type: ignore[no-any-return]
    if status == "cancelled":
        payment = await api.create(**body)
        return await api.post(f"/payments/{payment['id']}/cancel")
    payment = await api.paid(**body)
    if status in ("partially_refunded", "refunded"):
        await refund(
            api, payment["id"], **({"amount": 500} if status == "partially_refunded" else {})
        )
        payment = await api.get(f"/payments/{payment['id']}")
    assert payment["status"] == status
    return payment


def money(payment: dict[str, Any]) -> tuple[int, int, int]:
    return payment["amount_capturable"], payment["amount_captured"], payment["amount_refunded"]


async def ledger(container: Container) -> list[tuple[str, str, int]]:
    return sorted(
        (c.payment_id, c.status, c.amount_captured) for c in await rows(container, SandboxCharge)
    )


# (from, to, (capturable, captured, refunded) after)
ALLOWED = [
    ("pending", "authorized", (1999, 0, 0)),
    ("pending", "captured", (0, 1999, 0)),
    ("pending", "processing", (0, 0, 0)),
    ("pending", "failed", (0, 0, 0)),
    ("pending", "cancelled", (0, 0, 0)),
    ("processing", "authorized", (1999, 0, 0)),
    ("processing", "captured", (0, 1999, 0)),
    ("processing", "failed", (0, 0, 0)),
    ("authorized", "captured", (0, 1999, 0)),
    ("authorized", "cancelled", (0, 0, 0)),
]


@pytest.mark.parametrize(("start", "target", "after"), ALLOWED)
async def test_allowed_correction(
    api: Api, container: Container, start: str, target: str, after: tuple[int, int, int]
) -> None:
    payment = await make(api, start)
    if start == "processing":
        await past_the_window(container, payment["id"])
    before_ledger = await ledger(container)
    events_before = len(await history(container, payment["id"]))

    corrected = await put_status(api, payment["id"], target)
    assert corrected["status"] == target
    assert money(corrected) == after
    assert corrected["id"] == payment["id"]
    assert corrected == await api.get(f"/payments/{payment['id']}", ADMIN)
    assert await ledger(container) == before_ledger  # the gateway was not called

    events = await history(container, payment["id"])
    assert len(events) == events_before + 1
    event = events[-1]
    assert (event.type, event.from_status, event.to_status) == ("status_changed", start, target)
    assert (event.reason, event.actor_id) == (REASON, "admin-1")

    audit = {entry.action: entry for entry in await audit_of(container, payment["id"])}
    change = audit[f"payment.{target}"]
    assert (change.actor_id, change.actor_role) == ("admin-1", "admin")
    assert json.loads(change.details) == {"from": start, "to": target, "reason": REASON}
    correction = audit["admin.payment_status_corrected"]
    assert correction.actor_id == "admin-1"
    details = json.loads(correction.details)
    assert (details["from"], details["to"], details["reason"]) == (start, target, REASON)
    assert details["before"] == dict(zip(FIELDS, money(payment), strict=True))
    assert details["after"] == dict(zip(FIELDS, after, strict=True))


STATE = "invalid_state_transition"
REFUSED = [
    ("captured", "partially_refunded", "use_refunds_endpoint"),
    ("captured", "refunded", "use_refunds_endpoint"),
    ("partially_refunded", "partially_refunded", "use_refunds_endpoint"),
    ("partially_refunded", "refunded", "use_refunds_endpoint"),
    ("pending", "refunded", STATE),  # not in the table: the table answers first
    ("pending", "pending", STATE),
    ("processing", "cancelled", STATE),
    ("processing", "pending", STATE),
    ("authorized", "pending", STATE),
    ("authorized", "failed", STATE),
    ("captured", "captured", STATE),
    ("captured", "authorized", STATE),
    ("captured", "cancelled", STATE),
    ("partially_refunded", "captured", STATE),
    ("failed", "captured", STATE),
    ("failed", "pending", STATE),
    ("cancelled", "authorized", STATE),
    ("refunded", "captured", STATE),
    ("refunded", "partially_refunded", STATE),
]


@pytest.mark.parametrize(("start", "target", "code"), REFUSED)
async def test_refused_correction_changes_nothing(
    api: Api, container: Container, start: str, target: str, code: str
) -> None:
    payment = await make(api, start)
    if start == "processing":
        await past_the_window(container, payment["id"])
    events_before = len(await history(container, payment["id"]))
    error = (await put_status(api, payment["id"], target, expect=409))["error"]
    assert (error["type"], error["code"], error["param"]) == ("state_conflict", code, "status")
    assert await api.get(f"/payments/{payment['id']}", ADMIN) == payment
    assert len(await history(container, payment["id"])) == events_before
    actions = {entry.action for entry in await audit_of(container, payment["id"])}
    assert "admin.payment_status_corrected" not in actions


async def test_capture_of_an_authorization_takes_what_is_capturable(
    api: Api, container: Container
) -> None:
    payment = await make(api, "authorized")

    async def shrink(session: Any) -> None:  # updates the row: an authorization of 600 left
        await session.execute(
            update(Payment).where(Payment.id == payment["id"]).values(amount_capturable=600)
        )

    await container.db.run(shrink)
    corrected = await put_status(api, payment["id"], "captured")
    assert money(corrected) == (0, 600, 0)


async def test_a_capture_the_gateway_never_made_cannot_be_refunded(api: Api) -> None:
    """The correction records our belief only: no charge exists, so no refund can move money,
    and amount_refunded stays the sum of the refunds (none)."""
    payment = await make(api, "pending")
    await put_status(api, payment["id"], "captured")
    error = (await refund(api, payment["id"], status=409))["error"]
    assert error["type"] == "state_conflict"
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], money(after)) == ("captured", (0, 1999, 0))
    assert (await api.get(f"/payments/{payment['id']}/refunds", ADMIN))["data"] == []


async def past_the_window(container: Container, payment_id: str) -> None:
    """A processing payment whose charge got no answer inside the gateway's window: `unknown`,
    for a human to decide."""

    async def give_up(session: Any) -> None:
        await session.execute(
            update(Operation).where(Operation.payment_id == payment_id).values(status="unknown")
        )

    await container.db.run(give_up)


async def test_operation_in_flight_is_409(api: Api, container: Container) -> None:
    payment = await make(api, "processing")  # its charge is pending in the ledger
    for target in ("captured", "failed"):
        error = (await put_status(api, payment["id"], target, expect=409))["error"]
        assert (error["type"], error["code"]) == ("state_conflict", "operation_in_progress")
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "processing"
    await past_the_window(container, payment["id"])
    assert (await put_status(api, payment["id"], "failed"))["status"] == "failed"


async def test_an_order_is_never_held_twice(api: Api) -> None:
    paid = await make(api, "captured", order_id="order-x")
    other = await make(api, "pending", order_id="order-x")
    for target in ("authorized", "captured", "processing"):
        error = (await put_status(api, other["id"], target, expect=409))["error"]
        assert error["code"] == "order_already_paid"
    assert (await put_status(api, other["id"], "cancelled"))["status"] == "cancelled"
    assert (await api.get(f"/payments/{paid['id']}"))["status"] == "captured"


async def test_unknown_payment_is_404(api: Api) -> None:
    error = (await put_status(api, "pay_doesnotexist", "failed", expect=404))["error"]
    assert error["type"] == "not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"status": "failed"}, "reason"),
        ({"status": "failed", "reason": ""}, "reason"),
        ({"status": "failed", "reason": "   "}, "reason"),
        ({"status": "failed", "reason": "x" * 501}, "reason"),
        ({"status": "failed", "reason": 42}, "reason"),
        ({"reason": REASON}, "status"),
        ({"status": "settled", "reason": REASON}, "status"),
        ({"status": "failed", "reason": REASON, "amount_captured": 1999}, "amount_captured"),
    ],
)
async def test_validation(api: Api, body: dict[str, Any], param: str) -> None:
    payment = await make(api, "pending")
    response = await api.client.put(
        f"/admin/payments/{payment['id']}/status", json=body, headers=ADMIN
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"


async def test_reason_of_500_characters_is_kept_whole(api: Api, container: Container) -> None:
    payment = await make(api, "pending")
    await put_status(api, payment["id"], "failed", reason="r" * 500)
    assert (await history(container, payment["id"]))[-1].reason == "r" * 500


@pytest.mark.parametrize("headers", [CUSTOMER, SERVICE])
async def test_only_admins(api: Api, headers: dict[str, str]) -> None:
    payment = await make(api, "pending")  # the customer's own payment
    error = (await put_status(api, payment["id"], "failed", headers=headers, expect=403))["error"]
    assert error["type"] == "permission_error"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"


async def test_idempotency_key_replays(api: Api, container: Container) -> None:
    payment = await make(api, "pending")
    path = f"/admin/payments/{payment['id']}/status"
    headers = {**ADMIN, "Idempotency-Key": "fix-4711"}
    body = {"status": "authorized", "reason": REASON}
    first = await api.client.put(path, json=body, headers=headers)
    second = await api.client.put(path, json=body, headers=headers)
    assert first.status == second.status == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await first.json() == await second.json()
    assert len(await history(container, payment["id"])) == 2  # created + one correction
    other = await api.client.put(path, json={**body, "status": "captured"}, headers=headers)
    assert other.status == 422
    assert (await other.json())["error"]["type"] == "idempotency_error"


async def test_concurrent_corrections_one_winner_per_step(api: Api, container: Container) -> None:
    payment = await make(api, "pending")
    targets = ["authorized", "captured", "processing", "failed", "cancelled"] * 2

    async def put(target: str) -> tuple[str, int, dict[str, Any]]:
        response = await api.client.put(
            f"/admin/payments/{payment['id']}/status",
            json={"status": target, "reason": f"race {target}"},
            headers=ADMIN,
        )
        return target, response.status, await response.json()

    replies = await asyncio.gather(*(put(t) for t in targets))
    assert all(status in (200, 409) for _, status, _ in replies), replies
    assert all(
        body["error"]["code"] == "invalid_state_transition"
        for _, status, body in replies
        if status == 409
    )
    winners = Counter(target for target, status, _ in replies if status == 200)
    assert winners and all(n == 1 for n in winners.values()), winners

    # The history is one chain from pending, one step per winner, each step from the table.
    changes = [e for e in await history(container, payment["id"]) if e.type == "status_changed"]
    step = {e.from_status: e for e in changes}
    assert len(step) == len(changes) == sum(winners.values())
    chain, current = [], "pending"
    while current in step:
        event = step[current]
        assert event.reason == f"race {event.to_status}"
        chain.append(event.to_status)
        current = str(event.to_status)
    assert Counter(chain) == winners
    final = await api.get(f"/payments/{payment['id']}")
    assert final["status"] == current
    expected = {
        "authorized": (1999, 0, 0),
        "captured": (0, 1999, 0),
        "processing": (0, 0, 0),
        "failed": (0, 0, 0),
        "cancelled": (0, 0, 0),
    }
    assert money(final) == expected[current]
    # One audited correction per winner, each with its own reason.
    corrections = [
        e
        for e in await audit_of(container, payment["id"])
        if e.action == "admin.payment_status_corrected"
    ]
    assert sorted(json.loads(e.details)["reason"] for e in corrections) == sorted(
        f"race {target}" for target in chain
    )
