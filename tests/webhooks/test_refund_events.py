"""Refund events (`charge.refunded`, `refund.updated`, ...) through the real HTTP stack: they
settle our pending refunds once, forward only, and book refunds made in the Stripe dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from paysvc.gateways.base import GatewayRefund, GatewayRefundStatus
from paysvc.payments.models import PaymentEvent
from tests.conftest import SERVICE, Api
from tests.refunds.helpers import (
    assert_books_agree,
    books,
    lost_refund,
    refund,
    sandbox,
)
from tests.stripe_events import (
    charge_refunded,
    count_events,
    deliver,
    event,
    gateway_refund,
    inbox,
    refund_object,
)

Factory = Callable[..., Any]


def _event_for(event_type: str, truth: GatewayRefund, status: str | None = None) -> dict[str, Any]:
    obj = refund_object(truth, status)
    return event(event_type, charge_refunded([obj]) if event_type == "charge.refunded" else obj)


@pytest.mark.parametrize(
    ("event_type", "amount", "payment_status"),
    [
        ("charge.refunded", 500, "partially_refunded"),
        ("refund.updated", 1999, "refunded"),
        ("charge.refund.updated", 700, "partially_refunded"),
    ],
)
async def test_event_settles_a_pending_refund(
    api: Api,
    client: TestClient[Any, Any],
    container: Container,
    aiohttp_client: Factory,
    event_type: str,
    amount: int,
    payment_status: str,
) -> None:
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], amount)
    truth = await gateway_refund(container, pending["id"])
    assert (await deliver(client, _event_for(event_type, truth)))["status"] == "applied"

    settled = await api.get(f"/refunds/{pending['id']}")
    assert (settled["status"], settled["amount"]) == ("succeeded", amount)
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == (payment_status, amount)
    assert await count_events(container, payment["id"], "refund_succeeded") == 1
    assert_books_agree(await books(container, payment["id"]))


async def test_failed_event_fails_the_refund_and_releases_the_amount(
    api: Api, client: TestClient[Any, Any], container: Container, aiohttp_client: Factory
) -> None:
    payment = await api.paid("pm_card_refundFail")
    pending = await lost_refund(aiohttp_client, container, payment["id"], 1999)
    truth = await gateway_refund(container, pending["id"])
    assert truth.status == GatewayRefundStatus.FAILED
    assert (await deliver(client, _event_for("refund.failed", truth)))["status"] == "applied"

    failed = await api.get(f"/refunds/{pending['id']}")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "declined")
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("captured", 0)
    # The whole amount is refundable again (this card's refunds fail, but it is accepted).
    again = await refund(api, payment["id"], amount=1999)
    assert again["status"] == "failed"
    assert_books_agree(await books(container, payment["id"]))


async def test_five_concurrent_deliveries_are_applied_once(
    api: Api, client: TestClient[Any, Any], container: Container, aiohttp_client: Factory
) -> None:
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], 600)
    payload = _event_for("charge.refunded", await gateway_refund(container, pending["id"]))
    results = await asyncio.gather(*(deliver(client, payload) for _ in range(5)))
    assert sorted(r["status"] for r in results) == ["applied"] + ["duplicate"] * 4
    assert await inbox(container) == {payload["id"]: "applied"}
    assert await count_events(container, payment["id"], "refund_succeeded") == 1
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 600)
    assert_books_agree(await books(container, payment["id"]))


async def test_events_never_move_a_refund_backwards(
    api: Api, client: TestClient[Any, Any], container: Container, aiohttp_client: Factory
) -> None:
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], 400)
    truth = await gateway_refund(container, pending["id"])
    await deliver(client, _event_for("refund.updated", truth))
    succeeded = await api.get(f"/refunds/{pending['id']}")
    assert succeeded["status"] == "succeeded"
    # Out of order: a late `pending` changes nothing (a `failed` after `succeeded` is the
    # gateway reversing the refund: tests/operations/test_ledger_cases.py).
    payload = _event_for("refund.updated", truth, "pending")
    assert (await deliver(client, payload))["status"] == "applied"
    assert await api.get(f"/refunds/{pending['id']}") == succeeded
    assert await count_events(container, payment["id"], "refund_failed") == 0
    assert (await api.get(f"/payments/{payment['id']}"))["amount_refunded"] == 400
    assert_books_agree(await books(container, payment["id"]))


async def test_late_pending_before_the_outcome_changes_nothing(
    api: Api, client: TestClient[Any, Any], container: Container, aiohttp_client: Factory
) -> None:
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], 400)
    truth = await gateway_refund(container, pending["id"])
    assert (await deliver(client, _event_for("refund.created", truth, "pending")))[
        "status"
    ] == "applied"
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "pending"
    await deliver(client, _event_for("refund.updated", truth))
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "succeeded"


async def test_dashboard_refund_is_booked(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await api.paid()
    dashboard = await sandbox(container).force_refund(payment["gateway_reference"], 700, "usd")
    payload = event(
        "charge.refunded",
        charge_refunded([refund_object(dashboard, reason="requested_by_customer")]),
    )
    assert (await deliver(client, payload))["status"] == "applied"

    [booked] = (await api.get(f"/payments/{payment['id']}/refunds"))["data"]
    assert (booked["amount"], booked["status"], booked["reason"]) == (
        700,
        "succeeded",
        "requested_by_customer",
    )
    assert booked["id"].startswith("re_") and booked["currency"] == "usd"
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 700)
    async with container.db.transaction(write=False) as session:
        history = list(
            await session.scalars(
                select(PaymentEvent).where(PaymentEvent.payment_id == payment["id"])
            )
        )
        audited = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "refund.recorded_from_gateway")
            )
        )
    recorded = [e for e in history if e.type == "refund_recorded_from_gateway"]
    assert [(e.actor_id, e.amount) for e in recorded] == [("stripe", 700)]
    assert [(a.actor_id, a.resource_id) for a in audited] == [("stripe", booked["id"])]
    moved = [(e.from_status, e.to_status, e.actor_id) for e in history if e.to_status]
    assert moved[-1] == ("captured", "partially_refunded", "stripe")

    # Another event about the same refund finds it by the gateway's id: no second row.
    assert (await deliver(client, _event_for("refund.updated", dashboard)))["status"] == "applied"
    assert len((await api.get(f"/payments/{payment['id']}/refunds"))["data"]) == 1
    # What is left is refundable through the API as usual.
    rest = await refund(api, payment["id"])
    assert (rest["amount"], rest["status"]) == (1299, "succeeded")
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "refunded"
    assert_books_agree(await books(container, payment["id"]))


async def test_dashboard_refund_beyond_refundable_waits_and_is_reported(
    api: Api,
    client: TestClient[Any, Any],
    container: Container,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Our books say only 499 is refundable; the gateway reports a 1000 refund we never made.
    It cannot be booked without breaking `amount_refunded <= amount_captured`: the event waits
    in the inbox, a warning is logged, and reconciliation reports it for a human."""
    payment = await api.paid()
    await api.post(f"/payments/{payment['id']}/refunds", {"amount": 1500}, SERVICE, status=201)
    before = await api.get(f"/payments/{payment['id']}")
    stray = GatewayRefund(
        reference="re_dashboard_1",
        payment_reference=payment["gateway_reference"],
        amount=1000,
        status=GatewayRefundStatus.SUCCEEDED,
    )
    payload = _event_for("charge.refunded", stray)
    with caplog.at_level(logging.WARNING, logger="paysvc.refunds.service"):
        assert (await deliver(client, payload))["status"] == "pending"
    assert "exceeds what is refundable" in caplog.text
    assert await api.get(f"/payments/{payment['id']}") == before
    assert len((await api.get(f"/payments/{payment['id']}/refunds"))["data"]) == 1

    report = await container.reconcile.run(dt.timedelta(hours=1), apply=True)
    [item] = report.items
    assert (item.id, item.object, item.kind, item.fixable) == (
        payload["id"],
        "refund",
        "unrecorded_refund",
        False,
    )
    assert await inbox(container) == {payload["id"]: "pending"}
    assert await api.get(f"/payments/{payment['id']}") == before


async def test_event_without_our_id_waits_for_our_pending_refund(
    api: Api, client: TestClient[Any, Any], container: Container, aiohttp_client: Factory
) -> None:
    """An event that does not carry our refund id, while one of our refunds is pending without
    the gateway's id, may be about that refund: it waits rather than booking it twice."""
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], 800)
    truth = await gateway_refund(container, pending["id"])
    payload = event("refund.updated", refund_object(truth, with_our_id=False))
    assert (await deliver(client, payload))["status"] == "pending"
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "pending"

    report = await container.reconcile.run(dt.timedelta(hours=1), apply=True)
    assert [(i.id, i.applied) for i in report.items] == [(pending["id"], True)]
    assert report.webhooks_applied == 1
    assert await inbox(container) == {payload["id"]: "applied"}
    assert len((await api.get(f"/payments/{payment['id']}/refunds"))["data"]) == 1
    assert await count_events(container, payment["id"], "refund_succeeded") == 1
    assert_books_agree(await books(container, payment["id"]))


async def test_pending_dashboard_refund_settles_through_reconciliation(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    """Booked `pending` from the event, then settled by asking the gateway for it by its own
    id (never resent: the gateway has it)."""
    payment = await api.paid()
    dashboard = await sandbox(container).force_refund(payment["gateway_reference"], 300, "usd")
    await deliver(client, _event_for("refund.created", dashboard, "pending"))
    [booked] = (await api.get(f"/payments/{payment['id']}/refunds"))["data"]
    assert (booked["status"], booked["amount"]) == ("pending", 300)
    # The pending 300 counts against what is refundable.
    error = await refund(api, payment["id"], amount=1700, status=422)
    assert error["error"]["code"] == "amount_exceeds_refundable"

    report = await container.reconcile.run(dt.timedelta(hours=1), apply=True)
    assert [(i.id, i.theirs, i.applied) for i in report.items] == [
        (booked["id"], "succeeded", True)
    ]
    assert (await api.get(f"/refunds/{booked['id']}"))["status"] == "succeeded"
    assert_books_agree(await books(container, payment["id"]))
