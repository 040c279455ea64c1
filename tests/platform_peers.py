"""The platform around paysvc, small enough for tests and `scripts/platform-demo`: an order
service (orders as the platform's order service shows them, the payment-events and status
routes paysvc calls) and a notification sink, as one aiohttp app that verifies every Standard
Webhooks signature with the receiver-side `standardwebhooks` check and records what it got."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: str
    verified: bool
    status: int  # what the peer answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def destination(self) -> str:
        if self.path == "/notifications":
            return "notification"
        return "order-status" if self.path.endswith("/status") else "order"


@dataclass
class Peers:
    """What the peers received, and how they should answer next."""

    secret: str
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /orders/{id}
    received: list[Received] = field(default_factory=list)
    answer: int = 200  # for event deliveries
    order_answer: int | None = None  # force GET /orders/{id} to answer this
    order_delay: asyncio.Event | None = None  # GET /orders/{id} waits for it
    lookups: list[dict[str, str]] = field(default_factory=list)  # headers of order lookups
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: int = 0
    hold: asyncio.Event | None = None  # deliveries wait for it before answering
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/orders/{order_id}", self._get_order)
        app.router.add_post("/orders/{order_id}/payment-events", self._event)
        app.router.add_put("/orders/{order_id}/status", self._event)
        app.router.add_post("/notifications", self._event)
        return app

    def events(self, destination: str = "order") -> list[dict[str, Any]]:
        """The verified, accepted events one destination got, in arrival order."""
        return [
            r.json
            for r in self.received
            if r.destination == destination and r.verified and 200 <= r.status < 300
        ]

    def types(self, destination: str = "order") -> list[str]:
        return [e["type"] for e in self.events(destination)]

    async def wait_for(self, done: Callable[[Peers], bool], what: str) -> None:
        """Until `done(self)` holds; fails naming `what` after a generous 60 s."""
        try:
            async with asyncio.timeout(60), self._changed:
                await self._changed.wait_for(lambda: done(self))
        except TimeoutError:
            raise AssertionError(f"the peers never got {what}") from None

    async def _get_order(self, request: web.Request) -> web.Response:
        self.lookups.append(dict(request.headers))
        if self.order_delay is not None:
            await self.order_delay.wait()
        if self.order_answer is not None:
            return web.json_response({"detail": "boom"}, status=self.order_answer)
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"detail": "Order not found"}, status=404)
        return web.Response(text=json.dumps(order), content_type="application/json")

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        key = f"{request.path} {headers.get('webhook-id')}"
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight[key])
        try:
            if self.hold is not None:
                await self.hold.wait()
            else:
                await asyncio.sleep(0)  # let a concurrent duplicate show itself
            status = self.answer if verified else 401
        finally:
            self.in_flight[key] -= 1
        async with self._changed:
            self.received.append(
                Received(request.method, request.path, headers, body, verified, status)
            )
            self._changed.notify_all()
        return web.json_response({"received": True}, status=status)
