"""Every state change produces its event once, in order per payment and destination, signed;
failures are retried until delivered or dead; a rolled-back change sends nothing."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook, WebhookVerificationError

from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container
from paysvc.events.models import Event, EventAttempt, EventDelivery
from paysvc.payments.states import PaymentStatus
from tests.conftest import ADMIN, SERVICE, Api
from tests.events.conftest import wake
from tests.platform_peers import Peers
from tests.support import ManualClock, count, eventually, rows

LIFECYCLE = [
    "payment.created",
    "payment.captured",
    "refund.created",
    "refund.succeeded",
    "payment.partially_refunded",
    "refund.created",
    "refund.succeeded",
    "payment.refunded",
]


async def stored_events(container: Container, payment_id: str) -> list[Event]:
    """The payment's events in the order they were written (their order deliveries' ids)."""
    found = await rows(container, Event, Event.payment_id == payment_id)
    deliveries = await rows(container, EventDelivery, EventDelivery.payment_id == payment_id)
    written = {d.event_id: d.id for d in deliveries if d.destination == "order"}
    return sorted(found, key=lambda e: written[e.id])


async def _until(container: Container, done: Any, payment_id: str) -> None:
    """Poll the deliveries of a payment until `done(deliveries)` (generous deadline)."""

    async def check() -> bool:
        return bool(
            done(await rows(container, EventDelivery, EventDelivery.payment_id == payment_id))
        )

    await eventually(check)


def dead_gauge_is(value: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return REGISTRY.get_sample_value("paysvc_events_dead") == value

    return check


def _head(deliveries: list[EventDelivery]) -> EventDelivery:
    """The first delivery to the order service (the one the others wait behind)."""
    return min((d for d in deliveries if d.destination == "order"), key=lambda d: d.id)


async def lifecycle(api: Api) -> dict[str, Any]:
    payment = await api.paid(receipt_email="buyer@example.com")
    await api.post(f"/payments/{payment['id']}/refunds", {"amount": 500}, SERVICE, status=201)
    await api.post(f"/payments/{payment['id']}/refunds", {}, SERVICE, status=201)
    return payment


async def test_every_change_is_delivered_once_in_order_and_signed(
    api: Api, container: Container, peers: Peers
) -> None:
    payment = await lifecycle(api)
    await peers.wait_for(lambda p: len(p.events("order")) == len(LIFECYCLE), "order events")
    await peers.wait_for(lambda p: len(p.events("notification")) == 3, "notifications")

    assert peers.types("order") == LIFECYCLE
    assert peers.types("notification") == [
        "payment.captured",
        "payment.partially_refunded",
        "payment.refunded",
    ]
    order_events = peers.events("order")
    stored = await stored_events(container, payment["id"])
    assert [e["id"] for e in order_events] == [e.id for e in stored]  # each once, in order
    assert all(r.verified for r in peers.received)
    first = order_events[0]
    assert first["object"] == "event" and first["payment_id"] == payment["id"]
    assert (first["order_id"], first["customer_id"]) == ("1042", "17")
    assert first["data"]["object"]["status"] == "pending"
    assert order_events[1]["data"]["object"]["amount_captured"] == 1999
    assert order_events[2]["data"]["object"]["object"] == "refund"
    assert order_events[-1]["data"]["object"]["amount_refunded"] == 1999
    # The notification service gets the receipt email; the order service does not.
    notifications = peers.events("notification")
    assert {n["receipt_email"] for n in notifications} == {"buyer@example.com"}
    assert all("receipt_email" not in e for e in order_events)
    # The webhook-id is the event id; the path names the order.
    request = next(r for r in peers.received if r.destination == "order")
    assert request.path == "/orders/1042/payment-events" and request.method == "POST"
    assert request.webhook_id == first["id"]
    # Every delivery is delivered after one attempt, recorded.
    await _until(container, lambda d: {x.status for x in d} == {"delivered"}, payment["id"])
    deliveries = await rows(container, EventDelivery, EventDelivery.payment_id == payment["id"])
    assert {(d.status, d.attempts) for d in deliveries} == {("delivered", 1)}
    attempts = await rows(container, EventAttempt)
    assert len(attempts) == len(deliveries) and {a.status_code for a in attempts} == {200}
    # The event (with the customer's email) is encrypted at rest.
    raw = stored[0].data_enc or ""
    assert "1042" not in raw and "buyer@example.com" not in (stored[0].receipt_email_enc or "")


async def test_signatures_fail_with_a_wrong_secret(api: Api, peers: Peers) -> None:
    await api.create()
    await peers.wait_for(lambda p: len(p.events("order")) == 1, "payment.created")
    request = peers.received[0]
    Webhook(peers.secret).verify(request.body, request.headers)  # the right secret
    wrong = "whsec_" + "d3JvbmctZXZlbnRzLXNlY3JldC0xMjM0NTY3OA=="
    with pytest.raises(WebhookVerificationError):
        Webhook(wrong).verify(request.body, request.headers)
    tampered = request.body.replace('"amount":1999', '"amount":1')
    with pytest.raises(WebhookVerificationError):
        Webhook(peers.secret).verify(tampered, request.headers)


async def test_a_failing_receiver_gets_everything_in_order_after_it_recovers(
    api: Api, container: Container, peers: Peers, clock: ManualClock
) -> None:
    peers.answer = 500
    payment = await lifecycle(api)
    # Only the first event of the payment is tried: the later ones wait behind it.
    await _until(container, lambda d: _head(d).attempts == 1, payment["id"])
    assert {r.webhook_id for r in peers.received if r.destination == "order"} == {
        (await stored_events(container, payment["id"]))[0].id
    }
    for tried in range(1, 4):  # more failures: 5 s, 30 s, 2 min later
        await _until(container, lambda d, n=tried: _head(d).attempts == n, payment["id"])  # type: ignore[misc]
        clock.advance(3 * 60)
        wake(container)
    await _until(container, lambda d: _head(d).attempts == 4, payment["id"])
    peers.answer = 200
    clock.advance(15 * 60)
    wake(container)
    await peers.wait_for(lambda p: len(p.events("order")) == len(LIFECYCLE), "recovery")
    await peers.wait_for(lambda p: len(p.events("notification")) == 3, "notifications")
    assert peers.types("order") == LIFECYCLE
    stored = [e.id for e in await stored_events(container, payment["id"])]
    for destination in ("order", "notification"):
        ids = [r.webhook_id for r in peers.received if r.destination == destination]
        assert set(ids) <= set(stored)  # duplicates (retries) only ever repeat a webhook-id
        delivered = [e["id"] for e in peers.events(destination)]
        assert delivered == [i for i in stored if i in delivered]  # in order, each once
    first = (await rows(container, EventDelivery, EventDelivery.event_id == stored[0]))[0]
    assert first.status == "delivered" and first.attempts >= 5
    assert len(await rows(container, EventAttempt, EventAttempt.delivery_id == first.id)) == (
        first.attempts
    )


async def test_a_receiver_that_is_down_gets_everything_after_it_comes_up(
    api: Api, container: Container, peers: Peers, peer_server: Any, clock: ManualClock
) -> None:
    port = peer_server.port
    await peer_server.close()  # down: connections refused
    payment = await lifecycle(api)
    await _until(container, lambda d: any(x.attempts > 0 for x in d), payment["id"])
    failed = await rows(container, EventDelivery, EventDelivery.attempts > 0)
    assert {d.last_error for d in failed} == {"connection failed"}
    assert {d.status for d in failed} == {"pending"}
    async with TestServer(peers.app(), host="127.0.0.1", port=port):  # up again
        clock.advance(10 * 60)
        wake(container)
        await peers.wait_for(lambda p: len(p.events("order")) == len(LIFECYCLE), "recovery")
        await peers.wait_for(lambda p: len(p.events("notification")) == 3, "notifications")
        await _until(container, lambda d: {x.status for x in d} == {"delivered"}, payment["id"])
    assert peers.types("order") == LIFECYCLE


async def test_an_event_whose_transaction_rolled_back_is_never_sent(
    api: Api, container: Container, peers: Peers
) -> None:
    payment = await api.create()

    class Boom(Exception):
        pass

    async def doomed(session: AsyncSession) -> None:
        locked = await container.payments.load(session, SYSTEM, payment["id"], for_update=True)
        container.payments.transition(
            session, locked, PaymentStatus.CANCELLED, SYSTEM, reason="doomed"
        )
        await session.flush()  # the event rows were written, then the transaction fails
        raise Boom

    with pytest.raises(Boom):
        await container.db.run(doomed)
    await api.post(f"/payments/{payment['id']}/cancel", {"reason": "abandoned"})
    await peers.wait_for(lambda p: len(p.events("order")) == 2, "created, cancelled")
    assert peers.types("order") == ["payment.created", "payment.cancelled"]
    assert await count(container, Event) == 2
    assert peers.events("order")[1]["data"]["object"]["cancellation_reason"] == "abandoned"


async def test_a_dead_delivery_is_logged_counted_listed_and_can_be_redelivered(
    api: Api,
    container: Container,
    peers: Peers,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    peers.answer = 503
    payment = await api.create()
    await peers.wait_for(lambda p: len(p.received) == 1, "first attempt")
    with caplog.at_level(logging.WARNING, logger="paysvc.events.dispatcher"):
        for _ in range(60):  # retried about every 2 h for 3 days, then dead
            (delivery,) = await rows(container, EventDelivery)
            if delivery.status == "dead":
                break
            clock.advance(3 * 3600)
            wake(container)
            await _until(
                container,
                lambda d, n=delivery.attempts: d[0].attempts > n,  # type: ignore[misc]
                payment["id"],
            )
    (event,) = await stored_events(container, payment["id"])
    assert delivery.status == "dead" and delivery.attempts > 20
    assert delivery.last_attempt_at is not None
    assert delivery.last_attempt_at - event.created_at > dt.timedelta(hours=69)  # ~3 days
    assert any("dead" in r.getMessage() and event.id in r.getMessage() for r in caplog.records)
    await eventually(dead_gauge_is(1))  # refreshed by the dispatcher after each pass
    exposed = await (await api.client.get("/metrics")).text()
    assert "paysvc_events_dead 1.0" in exposed and "paysvc_events_pending 0.0" in exposed
    listed = await api.get("/admin/events?status=dead", ADMIN)
    assert [e["id"] for e in listed["data"]] == [event.id]
    (delivery,) = listed["data"][0]["deliveries"]
    assert delivery["status"] == "dead" and delivery["last_status_code"] == 503
    assert delivery["attempts"] == len([r for r in peers.received])
    # Customers and services may not see or redeliver events.
    await api.get("/admin/events", SERVICE, status=403)
    await api.post(f"/admin/events/{event.id}/redeliver", {}, SERVICE, status=403)
    await api.post("/admin/events/evt_missing/redeliver", {}, ADMIN, status=404)

    peers.answer = 200
    answer = await api.post(f"/admin/events/{event.id}/redeliver", {}, ADMIN, status=202)
    assert answer == {"id": event.id, "object": "event_redelivery", "queued": 1}
    await peers.wait_for(lambda p: len(p.events("order")) == 1, "redelivered")
    assert peers.events("order")[0]["id"] == event.id
    assert (await api.get("/admin/events?status=dead", ADMIN))["data"] == []
    await _until(container, lambda d: d[0].status == "delivered", payment["id"])
    await eventually(dead_gauge_is(0))  # refreshed by the dispatcher after each pass
    delivered = await api.get(f"/admin/events?payment_id={payment['id']}", ADMIN)
    assert delivered["data"][0]["deliveries"][0]["status"] == "delivered"
    assert json.dumps(delivered).count(event.id) >= 1
