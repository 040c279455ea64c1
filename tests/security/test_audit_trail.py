"""The audit trail through HTTP: what each action leaves, `GET /admin/audit`, sealing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api
from tests.support import eventually

FIELDS = ("id", "occurred_at", "actor_id", "actor_role", "action", "resource_type", "outcome")


async def entries_of(container: Container, request_id: str) -> list[AuditEntry]:
    async with container.db.transaction(write=False) as session:
        stmt = select(AuditEntry).where(AuditEntry.request_id == request_id)
        return list(await session.scalars(stmt.order_by(AuditEntry.occurred_at, AuditEntry.id)))


class Recorder:
    """Sends requests with a known request id and returns what the trail holds for each."""

    def __init__(self, client: TestClient[Any, Any], container: Container) -> None:
        self.client = client
        self.container = container
        self.count = 0

    async def __call__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
        status: int = 200,
    ) -> tuple[dict[str, Any], list[AuditEntry]]:
        self.count += 1
        request_id = f"req-audit-{self.count}"
        started = dt.datetime.now(dt.UTC)
        response = await self.client.request(
            method, path, json=body, headers={**headers, "X-Request-Id": request_id}
        )
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        entries = await entries_of(self.container, request_id)
        for entry in entries:
            assert all(getattr(entry, name) for name in FIELDS), entry.__dict__
            assert entry.origin == "127.0.0.1"
            occurred = entry.occurred_at.replace(tzinfo=dt.UTC)
            assert started - dt.timedelta(seconds=1) <= occurred <= dt.datetime.now(dt.UTC)
            json.loads(entry.details)
        return data, entries


def summary(entries: list[AuditEntry]) -> list[tuple[str, str, str, str, str | None, str]]:
    return [
        (e.actor_id, e.actor_role, e.action, e.resource_type, e.resource_id, e.outcome)
        for e in entries
    ]


async def test_every_action_leaves_its_entries(
    client: TestClient[Any, Any], container: Container
) -> None:
    send = Recorder(client, container)
    intent = {"order_id": "1", "amount": 1000, "currency": "usd"}
    payment, found = await send("POST", "/payments/intents", CUSTOMER, intent, 201)
    pay = payment["id"]
    assert summary(found) == [("17", "customer", "payment.create", "payment", pay, "success")]
    assert json.loads(found[0].details) == {"order_id": "1", "amount": 1000, "currency": "usd"}

    _, found = await send(
        "POST", f"/payments/{pay}/confirm", CUSTOMER, {"payment_method": "pm_card_visa"}
    )
    assert summary(found) == [("17", "customer", "payment.captured", "payment", pay, "success")]
    assert json.loads(found[0].details) == {
        "from": "pending",
        "to": "captured",
        "reason": "confirmed",
    }

    refund, found = await send("POST", f"/payments/{pay}/refunds", SERVICE, {"amount": 300}, 201)
    service = ("order-service", "service")
    assert sorted(summary(found)) == [  # one transaction: the order within it is not the point
        (*service, "payment.partially_refunded", "payment", pay, "success"),
        (*service, "refund.created", "refund", refund["id"], "success"),
        (*service, "refund.succeeded", "refund", refund["id"], "success"),
    ]

    other, _ = await send("POST", "/payments/intents", CUSTOMER, {**intent, "order_id": "2"}, 201)
    _, found = await send("POST", f"/payments/{other['id']}/cancel", CUSTOMER, {})
    assert summary(found) == [
        ("17", "customer", "payment.cancelled", "payment", other["id"], "success")
    ]

    _, found = await send("GET", f"/payments/{pay}", CUSTOMER)
    assert found == []  # an owner reading its own payment is not an audited action

    _, found = await send("GET", f"/payments/{pay}", OTHER_CUSTOMER, status=404)
    assert summary(found) == [
        ("99", "customer", "access.resource_missing", "payment", pay, "denied")
    ]

    _, found = await send("GET", "/admin/payments", CUSTOMER, status=403)
    assert summary(found) == [
        ("17", "customer", "access.forbidden", "route", "/admin/payments", "denied")
    ]

    _, found = await send("GET", f"/payments/{pay}", {}, status=401)
    assert summary(found) == [
        (
            "anonymous",
            "customer",
            "access.authentication_required",
            "route",
            f"/payments/{pay}",
            "denied",
        )
    ]

    _, found = await send("GET", "/admin/payments?customer_id=17", ADMIN)
    assert summary(found) == [
        ("admin-1", "admin", "payments.admin_list", "payment", None, "success")
    ]
    assert json.loads(found[0].details) == {"filter": {"customer_id": "17"}, "returned": 2}

    _, found = await send("GET", f"/admin/audit?resource_id={pay}", ADMIN)
    assert summary(found) == [("admin-1", "admin", "audit.list", "audit_trail", None, "success")]


async def test_a_refused_change_leaves_no_success_entry(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    send = Recorder(client, container)
    payment = await api.create()
    await api.post(f"/payments/{payment['id']}/cancel")
    _, found = await send(
        "POST",
        f"/payments/{payment['id']}/confirm",
        CUSTOMER,
        {"payment_method": "pm_card_visa"},
        409,
    )
    assert found == []
    _, found = await send("POST", f"/payments/{payment['id']}/capture", CUSTOMER, {}, 403)
    assert [(e.action, e.outcome) for e in found] == [("access.forbidden", "denied")]
    paid = await api.paid(order_id="3")
    _, found = await send("POST", f"/payments/{paid['id']}/refunds", SERVICE, {"amount": 5000}, 422)
    assert found == []


async def test_entries_are_sealed_right_after_commit(api: Api, container: Container) -> None:
    # The commit itself wakes the sealer (not its 5 s period): observe the wake-up, then poll.
    wake = container.audit.on_commit
    assert wake is not None, "the app installs the sealer's wake-up on start"
    wakes: list[None] = []

    def observed() -> None:
        wakes.append(None)
        wake()

    container.audit.on_commit = observed
    await api.paid()
    assert wakes, "committing audited changes did not wake the sealer"

    async def all_sealed() -> bool:
        async with container.db.transaction(write=False) as session:
            unsealed = await session.scalars(select(AuditEntry).where(AuditEntry.seq.is_(None)))
            return unsealed.first() is None

    await eventually(all_sealed)


def page_ids(body: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in body["data"]]


async def test_admin_audit_lists_filters_and_pages(api: Api) -> None:
    first = await api.create()
    second = await api.create(order_id="2", headers=OTHER_CUSTOMER)
    await api.post(f"/payments/{first['id']}/cancel")

    body = await api.get(f"/admin/audit?resource_id={first['id']}", ADMIN)
    assert body["object"] == "list" and body["has_more"] is False and body["next_cursor"] is None
    assert [e["action"] for e in body["data"]] == ["payment.cancelled", "payment.create"]
    entry = body["data"][1]
    assert set(entry) == {
        "id",
        "object",
        "occurred_at",
        "actor",
        "action",
        "resource",
        "outcome",
        "origin",
        "request_id",
        "details",
    }
    assert entry["id"].startswith("aud_") and entry["object"] == "audit_entry"
    assert entry["occurred_at"].endswith("Z")
    assert entry["actor"] == {"id": "17", "role": "customer"}
    assert entry["resource"] == {"type": "payment", "id": first["id"]}
    assert (entry["outcome"], entry["origin"]) == ("success", "127.0.0.1")
    assert entry["request_id"].startswith("req_")
    assert entry["details"]["amount"] == 1999

    by_actor = await api.get("/admin/audit?actor_id=99", ADMIN)
    assert [e["resource"]["id"] for e in by_actor["data"]] == [second["id"]]

    everything: list[str] = []
    cursor = ""
    while True:
        page = await api.get(f"/admin/audit?limit=2{cursor}", ADMIN)
        everything += page_ids(page)
        if not page["has_more"]:
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        cursor = f"&starting_after={page['next_cursor']}"
    assert len(everything) == len(set(everything)) >= 5  # includes the earlier audit.list reads

    now = dt.datetime.now(dt.UTC)
    later = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await api.get(f"/admin/audit?since={later}", ADMIN))["data"] == []
    assert (await api.get(f"/admin/audit?until={earlier}", ADMIN))["data"] == []
    assert len((await api.get(f"/admin/audit?since={earlier}&until={later}", ADMIN))["data"]) > 0

    reads = await api.get("/admin/audit?actor_id=admin-1&limit=100", ADMIN)
    assert {e["action"] for e in reads["data"]} == {"audit.list"}
    assert any(e["details"]["actor_id"] == "99" for e in reads["data"])  # the filters are kept

    error = (await api.get("/admin/audit?since=yesterday", ADMIN, status=422))["error"]
    assert error["param"] == "since"


async def test_admin_audit_is_for_admins_only(api: Api) -> None:
    for who in (CUSTOMER, SERVICE):
        error = (await api.get("/admin/audit", who, status=403))["error"]
        assert error["type"] == "permission_error"
    denied = await api.get("/admin/audit?resource_id=/admin/audit", ADMIN)
    assert [e["outcome"] for e in denied["data"]] == ["denied", "denied"]
