"""Liveness, readiness, Swagger UI and the OpenAPI document."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from marshmallow import Schema

from paysvc import __version__
from paysvc.bootstrap import Container, build_container
from paysvc.payments.schemas import (
    AdminPaymentListQuery,
    CancelRequest,
    CaptureRequest,
    ConfirmRequest,
    CreateIntentRequest,
    PaymentListQuery,
)
from paysvc.web.app import create_app
from paysvc.web.handlers import health
from tests.conftest import Api, make_settings


async def test_health_needs_no_token(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "version": __version__}
    assert response.headers["X-Request-Id"]


async def test_ready_with_checks(api: Api) -> None:
    response = await api.client.get("/health/ready")
    assert response.status == 200
    assert await response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "gateway": "ok"},
        "gateways": {"sandbox": "ok", "active": "sandbox"},
    }


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("where", ["sqlite-missing-dir", "postgresql-closed-port"])
async def test_ready_is_503_naming_the_database(
    aiohttp_client: Callable[..., Any], tmp_path: Any, where: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/no/such/dir/paysvc.db"
        if where.startswith("sqlite")
        else f"postgresql://postgres@127.0.0.1:{_closed_port()}/paysvc"
    )
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(build_container(make_settings(url)))
    )
    response = await client.get("/health/ready")
    assert response.status == 503
    body = await response.json()
    assert body["status"] != "ready"
    assert body["checks"]["database"] != "ok"
    assert "Traceback" not in await response.text()
    assert (await client.get("/health")).status == 200  # still alive


async def test_docs_is_swagger_ui(api: Api) -> None:
    response = await api.client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "swagger" in page.lower() and "/openapi.json" in page


def _properties(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    name = ref.rsplit("/", 1)[1]
    definitions = spec.get("definitions") or spec.get("components", {}).get("schemas", {})
    assert name in definitions, f"{ref} is not defined in the document"
    return dict(definitions[name]["properties"])


def _body_ref(operation: dict[str, Any]) -> str:
    if "requestBody" in operation:
        return str(operation["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    (body,) = [p for p in operation["parameters"] if p["in"] == "body"]
    return str(body["schema"]["$ref"])


BODIES: list[tuple[str, type[Schema]]] = [
    ("/payments/intents", CreateIntentRequest),
    ("/payments/{id}/confirm", ConfirmRequest),
    ("/payments/{id}/capture", CaptureRequest),
    ("/payments/{id}/cancel", CancelRequest),
]
QUERIES: list[tuple[str, type[Schema]]] = [
    ("/payments", PaymentListQuery),
    ("/admin/payments", AdminPaymentListQuery),
]


async def _spec(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return dict(await response.json())


async def test_openapi_is_generated_from_the_validating_schemas(
    api: Api, aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    # A second app in the same process must document exactly as much as the first.
    other: TestClient[Any, Any] = await aiohttp_client(
        create_app(build_container(make_settings(database_url)))
    )
    for client in (api.client, other):
        spec = await _spec(client)
        for path, schema in BODIES:
            properties = _properties(spec, _body_ref(spec["paths"][path]["post"]))
            assert set(properties) == set(schema().fields), path
        create_ref = _body_ref(spec["paths"]["/payments/intents"]["post"])
        create = _properties(spec, create_ref)
        definition = spec["components"]["schemas"][create_ref.rsplit("/", 1)[1]]
        assert set(definition["required"]) == {"order_id", "amount", "currency"}
        assert definition["additionalProperties"] is False  # unknown fields are refused
        assert create["amount"]["type"] == "integer"
        assert create["amount"]["minimum"] == 1 and create["amount"]["maximum"] == 99_999_999
        assert create["capture_method"]["enum"] == ["automatic", "manual"]
        for path, schema in QUERIES:
            parameters = spec["paths"][path]["get"]["parameters"]
            names = {p["name"] for p in parameters if p.get("in") == "query"}
            assert names == set(schema().fields), path
        assert {"/payments/{id}", "/health", "/health/ready"} <= set(spec["paths"])


async def test_ready_does_not_hang_on_a_silent_database(
    api: Api, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_answers() -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(health, "READY_TIMEOUT", 0.05)
    monkeypatch.setattr(container.db, "ping", never_answers)
    response = await asyncio.wait_for(api.client.get("/health/ready"), 60)  # not 3600 s
    body = await response.json()
    assert response.status == 503
    assert body["checks"]["database"] == "unavailable"
    assert body["checks"]["gateway"] == "unavailable"  # the sandbox's ledger is that database
