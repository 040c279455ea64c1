"""Logs of real requests: one access line each, with the request id; never a token, an email,
card data or a query string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from paysvc.bootstrap import Container
from paysvc.payments.models import Payment
from paysvc.web.app import create_app
from tests.conftest import CUSTOMER, SERVICE, token
from tests.security.helpers import captured_logs, log_lines

EMAIL = "alice.buyer+shop@example.com"


async def test_access_lines_carry_no_secrets(
    aiohttp_client: Callable[..., Any], container: Container
) -> None:
    # Served as `paysvc serve` serves: aiohttp's own access log (raw path and query) is off.
    server = TestServer(create_app(container, own_container=False))
    await server.start_server(access_log=None)
    client = await aiohttp_client(server)
    bearer = token("17")
    with captured_logs() as logs:
        created = await client.post(
            "/payments/intents",
            json={"order_id": "1042", "amount": 1999, "currency": "usd", "receipt_email": EMAIL},
            headers={"Authorization": f"Bearer {bearer}", "X-Request-Id": "req-test-1"},
        )
        payment = await created.json()
        await client.get(f"/payments?order_id={EMAIL}&status=pending", headers=CUSTOMER)
        await client.get(f"/payments/{payment['id']}", headers={"Authorization": "Bearer nope"})
    text = logs.getvalue()
    for secret in (bearer, bearer.split(".")[1], EMAIL, "Bearer nope", "order_id="):
        assert secret not in text
    access = [line for line in log_lines(logs) if line["logger"] == "paysvc.access"]
    assert [(a["method"], a["route"], a["status"]) for a in access] == [
        ("POST", "/payments/intents", 201),
        ("GET", "/payments", 200),
        ("GET", "/payments/{id}", 401),
    ]
    first = access[0]
    assert first["request_id"] == "req-test-1" == created.headers["X-Request-Id"]
    assert isinstance(first["duration_ms"], float)
    assert first["message"] == "POST /payments/intents 201"
    assert all(a["request_id"].startswith("req") for a in access)


async def test_an_unexpected_error_is_logged_redacted_with_its_request_id(
    client: TestClient[Any, Any], container: Container
) -> None:
    bearer = token("order-service", "service")

    async def broken(*_args: Any, **_kwargs: Any) -> Payment:
        raise RuntimeError(f"boom for {EMAIL} with Bearer {bearer} card 4242 4242 4242 4242")

    container.payments.get = broken  # type: ignore[method-assign]
    with captured_logs() as logs:
        response = await client.get("/payments/pay_x", headers={**SERVICE})
    body = await response.json()
    assert response.status == 500
    assert body["error"]["type"] == "api_error"
    assert "boom" not in str(body)  # the client never sees the exception
    text = logs.getvalue()
    assert "RuntimeError: boom for [EMAIL] with Bearer [REDACTED] card [CARD]" in text
    for secret in (EMAIL, bearer, "4242 4242 4242 4242"):
        assert secret not in text
    lines = log_lines(logs)
    error = next(line for line in lines if line["level"] == "error")
    assert error["request_id"] == body["error"]["request_id"] == response.headers["X-Request-Id"]
    access = [line for line in lines if line["logger"] == "paysvc.access"]
    assert [(a["route"], a["status"]) for a in access] == [("/payments/{id}", 500)]
