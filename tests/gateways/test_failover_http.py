"""Failover through the whole stack: Stripe unreachable, the sandbox takes new payments, and
each payment stays with the gateway that took it."""

from __future__ import annotations

import socket
from typing import Any

from paysvc.bootstrap import build_container
from paysvc.web.app import create_app
from tests.conftest import SERVICE, Api, make_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_dead_stripe_fails_over_to_sandbox(aiohttp_client: Any, database_url: str) -> None:
    settings = make_settings(
        database_url,
        PAYMENT_GATEWAY="stripe,sandbox",
        STRIPE_SECRET_KEY="sk_test_failover",
        STRIPE_API_BASE=f"http://127.0.0.1:{_closed_port()}",
    )
    api = Api(await aiohttp_client(create_app(build_container(settings))))

    payment = await api.create(SERVICE, customer_id="17", capture_method="manual")
    assert payment["gateway"] == "stripe"  # the first choice, until a gateway takes it
    authorized = await api.post(
        f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}, SERVICE
    )
    assert authorized["status"] == "authorized"
    assert authorized["gateway"] == "sandbox"
    assert authorized["gateway_reference"].startswith("pi_sbx_")

    # Capture goes to the sandbox, which holds the authorization, not to the chain's first.
    captured = await api.post(f"/payments/{payment['id']}/capture", {}, SERVICE)
    assert captured["status"] == "captured"

    ready = await api.client.get("/health/ready")
    body = await ready.json()
    assert ready.status == 200
    assert body["gateways"]["stripe"] in ("unavailable", "circuit_open")
    assert body["gateways"]["active"] == "sandbox"


async def test_ready_is_503_when_no_gateway_can_charge(
    aiohttp_client: Any, database_url: str
) -> None:
    settings = make_settings(
        database_url,
        PAYMENT_GATEWAY="stripe",
        STRIPE_SECRET_KEY="sk_test_down",
        STRIPE_API_BASE=f"http://127.0.0.1:{_closed_port()}",
    )
    client = await aiohttp_client(create_app(build_container(settings)))
    response = await client.get("/health/ready")
    body = await response.json()
    assert response.status == 503
    assert body["checks"] == {"database": "ok", "gateway": "unavailable"}
