"""Log lines as an operator filters them: health probes only at DEBUG, and the payment id on
every line of a payment operation (the access line and what the services log on the way)."""

from __future__ import annotations

import logging
from typing import Any

from paysvc.bootstrap import Container
from tests.conftest import SERVICE, Api
from tests.security.helpers import captured_logs, log_lines


def access(lines: list[dict[str, Any]], route: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "paysvc.access" and line["route"] == route]


async def test_health_probes_log_at_debug_only(api: Api) -> None:
    with captured_logs() as info:  # LOG_LEVEL=info, as serve's default
        assert (await api.client.get("/health")).status == 200
        await api.get("/payments")
    lines = log_lines(info)
    assert access(lines, "/health") == []
    assert len(access(lines, "/payments")) == 1

    with captured_logs() as debug:
        logging.getLogger().setLevel("DEBUG")  # LOG_LEVEL=debug
        assert (await api.client.get("/health")).status == 200
    probe = access(log_lines(debug), "/health")
    assert [(p["level"], p["status"]) for p in probe] == [("debug", 200)]


async def test_payment_operations_log_their_payment_id(api: Api, container: Container) -> None:
    async def failing_listener(payment_id: str) -> None:
        raise RuntimeError("listener down")

    container.payments.confirm_listeners.append(failing_listener)
    with captured_logs() as stream:
        payment = await api.paid()
        await api.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, 201)
        await api.get("/payments")  # the same connection, about no payment
    lines = log_lines(stream)
    ids = {
        route: [line.get("payment_id") for line in access(lines, route)]
        for route in (
            "/payments/intents",
            "/payments/{id}/confirm",
            "/payments/{id}/refunds",
            "/payments",
        )
    }
    assert ids == {
        "/payments/intents": [payment["id"]],
        "/payments/{id}/confirm": [payment["id"]],
        "/payments/{id}/refunds": [payment["id"]],
        "/payments": [None],
    }
    failed = [line for line in lines if line["message"] == "confirm listener failed"]
    assert [line["payment_id"] for line in failed] == [payment["id"]]
