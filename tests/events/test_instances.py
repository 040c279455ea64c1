"""Two instances (two apps, two dispatchers) on one database never send the same delivery
at once, and between them deliver every event exactly once, in order per payment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from paysvc.bootstrap import build_container
from paysvc.config import Settings
from paysvc.events.models import EventDelivery
from paysvc.web.app import create_app
from tests.conftest import SERVICE, Api
from tests.platform_peers import Peers
from tests.support import count, eventually, rows

PAYMENTS = 12


async def test_two_instances_share_the_work_without_sending_anything_twice(
    api: Api,
    settings: Settings,
    peers: Peers,
    aiohttp_client: Callable[..., Any],
) -> None:
    other = build_container(settings)
    try:
        second = Api(await aiohttp_client(create_app(other, own_container=False)))

        async def flow(i: int, via: Api) -> None:
            body = {"order_id": f"ord-{i}", "customer_id": "17"}
            payment = await via.create(SERVICE, **body)
            await via.post(
                f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}, SERVICE
            )
            await via.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, 201)

        await asyncio.gather(*(flow(i, (api, second)[i % 2]) for i in range(PAYMENTS)))
        total = await count(other, EventDelivery)
        assert total == PAYMENTS * (5 + 2)  # 5 order events, 2 notifications each
        await peers.wait_for(lambda p: len(p.received) >= total, "every delivery")

        async def all_recorded() -> bool:
            delivered = await count(other, EventDelivery, EventDelivery.status == "delivered")
            return delivered == total

        await eventually(all_recorded)
        deliveries = sorted(await rows(other, EventDelivery), key=lambda d: d.id)
        attempts = sum(d.attempts for d in deliveries)
    finally:
        await other.close()

    assert peers.most_in_flight == 1
    sent = [(r.destination, r.webhook_id) for r in peers.received]
    assert len(sent) == len(set(sent)) == total == attempts  # exactly once each
    assert all(r.verified and r.status == 200 for r in peers.received)
    for destination in ("order", "notification"):
        arrived = [e["id"] for e in peers.events(destination)]
        for payment_id in {d.payment_id for d in deliveries}:
            written = [
                d.event_id
                for d in deliveries
                if d.payment_id == payment_id and d.destination == destination
            ]
            assert [i for i in arrived if i in written] == written  # in order, each once
