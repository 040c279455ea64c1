"""/metrics: every family moves when its event happens, through the HTTP stack; the page passes
`promtool check metrics` when promtool is installed (Debian `prometheus`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container, build_container
from paysvc.gateways.base import ChargeRequest, GatewayPayment, GatewayUnavailable
from paysvc.gateways.instrumented import InstrumentedGateway
from paysvc.web.app import create_app
from tests.conftest import SERVICE, Api, make_settings
from tests.stripe_events import deliver, event, intent, signed
from tests.stripe_events import settings as settings  # webhook secrets configured

DEADLINE = 60.0  # seconds to wait for the background reconciler; polled, never slept out


async def scrape(client: TestClient[Any, Any]) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return await response.text()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels…}` (0 when absent: a counter that never moved)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_http_requests_and_latency_by_route_and_status(
    api: Api, client: TestClient[Any, Any]
) -> None:
    payment = await api.create()
    await api.get(f"/payments/{payment['id']}")
    await api.get("/payments/pay_nope", status=404)
    text = await scrape(client)
    route = {"method": "GET", "route": "/payments/{id}"}
    assert value(text, "paysvc_http_requests_total", **route, status="200") == 1
    assert value(text, "paysvc_http_requests_total", **route, status="404") == 1
    created = {"method": "POST", "route": "/payments/intents", "status": "201"}
    assert value(text, "paysvc_http_requests_total", **created) == 1
    assert value(text, "paysvc_http_request_duration_seconds_count", **created) == 1
    assert value(text, "paysvc_http_request_duration_seconds_sum", **created) > 0
    assert payment["id"] not in text  # route templates, not ids: bounded label cardinality


async def test_payments_by_status_gateway_and_currency(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.paid(amount=1999)
    await api.paid(order_id="eur-1", amount=500, currency="EUR")
    declined = await api.create(order_id="d-1", amount=700)
    await api.post(
        f"/payments/{declined['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        status=402,
    )
    text = await scrape(client)

    def count(status: str, currency: str = "usd") -> float:
        labels = {"status": status, "gateway": "sandbox", "currency": currency}
        return value(text, "paysvc_payments_total", **labels)

    def amount(status: str, currency: str = "usd") -> float:
        labels = {"status": status, "gateway": "sandbox", "currency": currency}
        return value(text, "paysvc_payments_amount_minor_units_total", **labels)

    assert (count("pending"), amount("pending")) == (2, 1999 + 700)
    assert (count("captured"), amount("captured")) == (1, 1999)
    assert (count("failed"), amount("failed")) == (1, 700)
    assert (count("captured", "eur"), amount("captured", "eur")) == (1, 500)


async def test_payments_are_counted_only_when_their_transaction_commits(
    container: Container, client: TestClient[Any, Any]
) -> None:
    class Boom(Exception):
        pass

    async def reach(session: AsyncSession, fail: bool) -> None:
        container.metrics.payment_reached(session, "captured", "sandbox", "usd", 1999)
        if fail:
            raise Boom

    with pytest.raises(Boom):
        await container.db.run(lambda session: reach(session, True))
    labels = {"status": "captured", "gateway": "sandbox", "currency": "usd"}
    assert value(await scrape(client), "paysvc_payments_total", **labels) == 0
    await container.db.run(lambda session: reach(session, False))
    text = await scrape(client)
    assert value(text, "paysvc_payments_total", **labels) == 1
    assert value(text, "paysvc_payments_amount_minor_units_total", **labels) == 1999


async def test_gateway_calls_latency_and_circuit_breaker(
    api: Api, client: TestClient[Any, Any], container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = await api.paid()
    await api.post(f"/payments/{paid['id']}/refunds", {"amount": 100}, SERVICE, status=201)
    declined = await api.create(order_id="declined")
    confirm = f"/payments/{declined['id']}/confirm"
    await api.post(confirm, {"payment_method": "pm_card_chargeDeclined"}, status=402)
    text = await scrape(client)
    calls = "paysvc_gateway_calls_total"
    assert value(text, calls, gateway="sandbox", operation="charge", outcome="ok") == 1
    assert value(text, calls, gateway="sandbox", operation="charge", outcome="declined") == 1
    assert value(text, calls, gateway="sandbox", operation="refund", outcome="ok") == 1
    histogram = "paysvc_gateway_call_duration_seconds_count"
    assert value(text, histogram, gateway="sandbox", operation="charge") == 2
    circuit = "paysvc_gateway_circuit_state"
    assert value(text, circuit, gateway="sandbox", state="closed") == 1
    assert value(text, circuit, gateway="sandbox", state="open") == 0

    async def down(_request: ChargeRequest) -> GatewayPayment:
        raise GatewayUnavailable("connection refused")

    sandbox = container.gateways.for_payment("sandbox")
    assert isinstance(sandbox, InstrumentedGateway)  # every gateway call passes the seam
    monkeypatch.setattr(sandbox.inner, "charge", down)
    for n in range(3):  # the breaker's threshold
        payment = await api.create(order_id=f"down-{n}")
        confirm = f"/payments/{payment['id']}/confirm"
        failed = await api.post(confirm, {"payment_method": "pm_card_visa"}, status=503)
        assert failed["error"]["type"] == "gateway_error"
    text = await scrape(client)
    assert value(text, calls, gateway="sandbox", operation="charge", outcome="unavailable") == 3
    assert value(text, circuit, gateway="sandbox", state="open") == 1
    assert value(text, circuit, gateway="sandbox", state="closed") == 0


async def test_webhooks_by_type_and_result(client: TestClient[Any, Any]) -> None:
    early = event("payment_intent.succeeded", intent("pi_unknown_yet", "succeeded"))
    assert (await deliver(client, early))["status"] == "pending"
    await deliver(client, early)  # redelivery
    await deliver(client, event("customer.created", {"id": "cus_1", "object": "customer"}))
    body = json.dumps(early).encode()
    forged = await client.post(
        "/webhooks/stripe", data=body, headers=signed(body, "whsec_wrong_" + "c" * 24)
    )
    assert forged.status == 400
    text = await scrape(client)
    received = "paysvc_webhooks_received_total"
    succeeded = "payment_intent.succeeded"
    assert value(text, received, type=succeeded, result="pending") == 1
    assert value(text, received, type=succeeded, result="duplicate") == 1
    assert value(text, received, type="other", result="ignored") == 1
    assert value(text, received, type="unverified", result="invalid_signature") == 1


async def test_reconcile_runs_and_drift_from_the_background_reconciler(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    services = build_container(make_settings(database_url, RECONCILE_INTERVAL="0.05"))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(services))
    api = Api(client)
    payment = await api.paid("pm_card_timeout")  # the answer is lost: processing
    assert payment["status"] == "processing"
    runs = "paysvc_reconcile_runs_total"
    drift = "paysvc_reconcile_drift_total"
    deadline = time.monotonic() + DEADLINE
    text = await scrape(client)
    while value(text, drift, kind="stuck_operation") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        text = await scrape(client)
    assert value(text, drift, kind="stuck_operation") == 1
    assert value(text, runs, trigger="background", outcome="ok") >= 1
    assert value(text, runs, trigger="background", outcome="error") == 0
    labels = {"gateway": "sandbox", "currency": "usd"}
    assert value(text, "paysvc_payments_total", status="captured", **labels) == 1


async def test_process_metrics_and_promtool_check(api: Api, client: TestClient[Any, Any]) -> None:
    await api.paid()
    text = await scrape(client)
    assert value(text, "process_cpu_seconds_total") > 0
    assert value(text, "process_resident_memory_bytes") > 0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (apt-get install prometheus): lint not run")
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(text.encode())
    assert (process.returncode, output.decode()) == (0, "")
