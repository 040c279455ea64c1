"""Routing: disputes reach the notification service; `order-status` turns authorizations and
captures into the platform order service's `PUT /orders/{id}/status`; EVENTS_DESTINATIONS
turns destinations off."""

from __future__ import annotations

import pytest

from paysvc.bootstrap import Container
from paysvc.config import Settings
from paysvc.events.models import Event, EventDelivery
from tests.conftest import SERVICE, Api, make_settings
from tests.events.conftest import wake
from tests.platform_peers import Peers
from tests.stripe_events import WEBHOOK_SECRET, deliver, dispute, event
from tests.support import ManualClock, count, eventually, rows


class TestDisputes:
    @pytest.fixture
    def settings(self, database_url: str, peer_url: str) -> Settings:
        return make_settings(
            database_url,
            ORDER_SERVICE_URL=peer_url,
            NOTIFICATION_SERVICE_URL=peer_url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )

    async def test_dispute_events(self, api: Api, container: Container, peers: Peers) -> None:
        payment = await api.paid()
        reference = payment["gateway_reference"]
        await deliver(api.client, event("charge.dispute.created", dispute("dp_s_1", reference)))
        won = dispute("dp_s_1", reference, "won")
        await deliver(api.client, event("charge.dispute.closed", won))
        await peers.wait_for(lambda p: "dispute.created" in p.types("notification"), "dispute")
        assert peers.types("notification") == ["payment.captured", "dispute.created"]
        created = peers.events("notification")[1]
        assert created["data"]["object"]["object"] == "dispute"
        assert created["data"]["object"]["status"] == "needs_response"
        types = [e.type for e in await rows(container, Event)]
        assert {"dispute.created", "dispute.closed"} <= set(types)
        # Disputes are not order-service business: only notifications route them.
        assert "dispute.created" not in peers.types("order")


class TestOrderStatus:
    @pytest.fixture
    def settings(self, database_url: str, peer_url: str) -> Settings:
        return make_settings(
            database_url,
            ORDER_SERVICE_URL=peer_url,
            EVENTS_DESTINATIONS="order-status",
            ORDER_SERVICE_TOKEN="order-service-token",
        )

    async def test_authorized_and_captured_confirm_the_order(
        self, api: Api, peers: Peers, container: Container
    ) -> None:
        payment = await api.paid(capture_method="manual")
        await api.post(f"/payments/{payment['id']}/capture", {}, SERVICE)
        await peers.wait_for(lambda p: len(p.events("order-status")) == 2, "two status PUTs")
        puts = [r for r in peers.received if r.destination == "order-status"]
        assert {(r.method, r.path) for r in puts} == {("PUT", "/orders/1042/status")}
        assert {r.headers["authorization"] for r in puts} == {"Bearer order-service-token"}
        assert [r.json for r in puts] == [
            {"status": "CONFIRMED", "notes": f"payment {payment['id']} authorized"},
            {"status": "CONFIRMED", "notes": f"payment {payment['id']} captured"},
        ]
        # Nothing else goes anywhere: order and notification are off.
        assert {r.destination for r in peers.received} == {"order-status"}
        assert await count(container, EventDelivery) == 2

    @pytest.mark.parametrize(("answer", "status"), [(404, "failed"), (409, "failed")])
    async def test_a_4xx_is_failed_not_retried(
        self, api: Api, peers: Peers, container: Container, answer: int, status: str
    ) -> None:
        peers.answer = answer
        await api.paid()

        async def recorded() -> bool:
            return [d.status for d in await rows(container, EventDelivery)] == [status]

        await eventually(recorded)
        (delivery,) = await rows(container, EventDelivery)
        assert (delivery.attempts, delivery.last_status_code) == (1, answer)

    @pytest.mark.parametrize("answer", [408, 429, 500])
    async def test_timeouts_throttling_and_5xx_are_retried(
        self,
        api: Api,
        peers: Peers,
        container: Container,
        clock: ManualClock,
        answer: int,
    ) -> None:
        peers.answer = answer
        await api.paid()

        async def retried() -> bool:
            (delivery,) = await rows(container, EventDelivery)
            if delivery.attempts < 2:
                clock.advance(10)
                wake(container)
            return delivery.attempts >= 2 and delivery.status == "pending"

        await eventually(retried)
        peers.answer = 200
        clock.advance(3600)
        wake(container)
        await peers.wait_for(lambda p: len(p.events("order-status")) == 1, "delivered")
