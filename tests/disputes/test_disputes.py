"""Disputes from Stripe webhooks, listed at GET /payments/{id}/disputes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api
from tests.stripe_events import count_events, deliver, dispute, event


async def _audited(container: Container, action: str) -> list[AuditEntry]:
    async with container.db.transaction(write=False) as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


async def test_dispute_created_then_won(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await api.paid()
    reference = payment["gateway_reference"]
    await deliver(client, event("charge.dispute.created", dispute("dp_stripe_1", reference)))

    listed = await api.get(f"/payments/{payment['id']}/disputes", SERVICE)
    assert listed["object"] == "list" and listed["has_more"] is False
    assert listed["next_cursor"] is None
    [item] = listed["data"]
    assert item["id"].startswith("dp_") and item["id"] != "dp_stripe_1"
    assert {k: v for k, v in item.items() if k not in ("id", "created_at")} == {
        "object": "dispute",
        "payment_id": payment["id"],
        "amount": 1999,
        "currency": "usd",
        "reason": "fraudulent",
        "status": "needs_response",
        "evidence_due_by": "2030-03-17T17:46:40Z",
    }
    assert (await api.get(f"/payments/{payment['id']}"))["disputed"] is True

    await deliver(
        client, event("charge.dispute.updated", dispute("dp_stripe_1", reference, "under_review"))
    )
    await deliver(client, event("charge.dispute.closed", dispute("dp_stripe_1", reference, "won")))
    [won] = (await api.get(f"/payments/{payment['id']}/disputes", ADMIN))["data"]
    assert won["status"] == "won" and won["id"] == item["id"]
    after = await api.get(f"/payments/{payment['id']}")
    assert after["disputed"] is False and after["status"] == "captured"

    for change in ("created", "updated", "closed"):
        assert await count_events(container, payment["id"], f"dispute.{change}") == 1
        [entry] = await _audited(container, f"dispute.{change}")
        assert (entry.actor_id, entry.resource_id) == ("stripe", item["id"])


async def test_lost_dispute_keeps_payment_disputed_and_old_news_is_ignored(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await api.paid()
    reference = payment["gateway_reference"]
    await deliver(client, event("charge.dispute.closed", dispute("dp_2", reference, "lost")))
    # Out of order: the creation and an update arrive after the close.
    await deliver(client, event("charge.dispute.created", dispute("dp_2", reference)))
    await deliver(
        client, event("charge.dispute.updated", dispute("dp_2", reference, "under_review"))
    )
    [item] = (await api.get(f"/payments/{payment['id']}/disputes", SERVICE))["data"]
    assert item["status"] == "lost"
    assert (await api.get(f"/payments/{payment['id']}"))["disputed"] is True
    assert await count_events(container, payment["id"], "dispute.created") == 1
    assert await count_events(container, payment["id"], "dispute.updated") == 0


async def test_two_disputes_and_pagination(api: Api, client: TestClient[Any, Any]) -> None:
    payment = await api.paid()
    reference = payment["gateway_reference"]
    await deliver(
        client,
        event("charge.dispute.created", dispute("du_inquiry", reference, "warning_needs_response")),
    )
    await deliver(client, event("charge.dispute.created", dispute("dp_3", reference, amount=500)))
    first = await api.get(f"/payments/{payment['id']}/disputes?limit=1", SERVICE)
    assert len(first["data"]) == 1 and first["has_more"] is True
    rest = await api.get(
        f"/payments/{payment['id']}/disputes?limit=1&starting_after={first['next_cursor']}",
        SERVICE,
    )
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert first["data"][0]["id"] != rest["data"][0]["id"]


async def test_disputes_are_for_staff_only(api: Api, container: Container) -> None:
    payment = await api.paid()
    error = await api.get(f"/payments/{payment['id']}/disputes", CUSTOMER, status=403)
    assert error["error"]["type"] == "permission_error"
    missing = await api.get("/payments/pay_nope/disputes", SERVICE, status=404)
    assert missing["error"]["type"] == "not_found"
    denied = await _audited(container, "access.forbidden")
    assert len(denied) == 1 and denied[0].actor_id == "17"
