"""The OpenAPI document: valid OpenAPI 3, complete, and true to what the service answers."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api

PUBLIC = {"/health", "/health/ready", "/metrics", "/webhooks/stripe"}


async def _spec(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return dict(await response.json())


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


async def test_the_document_is_valid_openapi_3(client: TestClient[Any, Any]) -> None:
    spec = await _spec(client)
    validate(spec)  # raises on any error
    assert spec["openapi"].startswith("3.")


async def test_every_operation_documents_security_headers_and_every_response(
    client: TestClient[Any, Any],
) -> None:
    spec = await _spec(client)
    components = spec["components"]
    assert components["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert spec["security"] == [{"bearerAuth": []}]
    assert components["parameters"]["IdempotencyKey"]["name"] == "Idempotency-Key"
    operations = _operations(spec)
    assert {m for _, m, _ in operations} <= {"get", "post", "put"}  # no HEAD twins
    assert len(operations) >= 17
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation["summary"] and operation["tags"], where
        assert (operation.get("security") == []) == (path in PUBLIC), where
        refs = [p.get("$ref", "") for p in operation["parameters"]]
        assert "#/components/parameters/XRequestId" in refs, where
        idempotent = "#/components/parameters/IdempotencyKey" in refs
        assert idempotent == (method in ("post", "put") and path not in PUBLIC), where
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), where
        assert "500" in responses and "503" in responses, where
        if path not in PUBLIC:
            assert {"401", "403", "429"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), where
        for code, response in responses.items():
            assert response["headers"]["X-Request-Id"], (where, code)
            if not code.startswith("2") and path != "/health/ready":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (where, code)
    create = spec["paths"]["/payments/intents"]["post"]
    assert create["requestBody"]["required"] is True
    assert (
        "IdempotentReplayed" in create["responses"]["201"]["headers"]["Idempotent-Replayed"]["$ref"]
    )
    capture = spec["paths"]["/payments/{id}/capture"]["post"]
    assert capture["requestBody"]["required"] is False  # every field optional: no body is fine
    assert {"200", "400", "413"} <= set(spec["paths"]["/webhooks/stripe"]["post"]["responses"])
    confirm = spec["paths"]["/payments/{id}/confirm"]["post"]["responses"]
    assert {"200", "202", "402", "409"} <= set(confirm)
    assert "Retry-After" in confirm["503"]["headers"]


async def test_objects_lists_nullables_and_examples(client: TestClient[Any, Any]) -> None:
    spec = await _spec(client)
    schemas = spec["components"]["schemas"]
    for name in ("Payment", "Refund", "Dispute", "Error", "ErrorObject", "AuditEntry"):
        assert name in schemas, name
    assert schemas["Payment"]["properties"]["object"]["enum"] == ["payment"]
    payment_method = schemas["Payment"]["properties"]["payment_method"]
    assert payment_method == {
        "anyOf": [{"$ref": "#/components/schemas/PaymentMethod"}, {"type": "null"}]
    }
    assert schemas["Payment"]["properties"]["gateway_reference"]["type"] == ["string", "null"]
    assert "x-nullable" not in str(spec) and "nullable" not in str(spec)  # 3.1: type null
    for path, item in (
        ("/payments", "Payment"),
        ("/admin/payments", "Payment"),
        ("/payments/{id}/refunds", "Refund"),
        ("/payments/{id}/disputes", "Dispute"),
        ("/admin/audit", "AuditEntry"),
    ):
        ok = spec["paths"][path]["get"]["responses"]["200"]
        ref = ok["content"]["application/json"]["schema"]["$ref"]
        envelope = schemas[ref.rsplit("/", 1)[1]]
        assert envelope["properties"]["data"]["items"] == {
            "$ref": f"#/components/schemas/{item}"
        }, path
        assert "null" in envelope["properties"]["next_cursor"]["type"], path
        assert set(envelope["required"]) == {"object", "data", "has_more", "next_cursor"}
    error = schemas["ErrorObject"]
    assert set(error["required"]) == {"type", "code", "message", "param", "request_id"}
    assert "card_error" in error["properties"]["type"]["enum"]
    for path in ("/payments/intents", "/payments/{id}/confirm", "/payments/{id}/refunds"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["example"], path


def _check(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """The body the service sent is what the document says for that status."""
    response = spec["paths"][path][method]["responses"][str(status)]
    schema = {**response["content"]["application/json"]["schema"], "components": spec["components"]}
    errors = [e.message for e in OAS31Validator(schema).iter_errors(body)]
    assert errors == [], (method, path, status, errors)


async def test_answers_match_the_document(api: Api) -> None:
    spec = await _spec(api.client)
    created = await api.create(description="gift", metadata={"k": "v"})
    _check(spec, "/payments/intents", "post", 201, created)
    paid = await api.post(f"/payments/{created['id']}/confirm", {"payment_method": "pm_card_visa"})
    _check(spec, "/payments/{id}/confirm", "post", 200, paid)
    refund = await api.post(f"/payments/{paid['id']}/refunds", {"amount": 500}, SERVICE, 201)
    _check(spec, "/payments/{id}/refunds", "post", 201, refund)
    _check(spec, "/refunds/{id}", "get", 200, await api.get(f"/refunds/{refund['id']}"))
    listed = await api.get(f"/payments/{paid['id']}/refunds")
    _check(spec, "/payments/{id}/refunds", "get", 200, listed)
    _check(spec, "/payments", "get", 200, await api.get("/payments?limit=1"))
    _check(spec, "/admin/payments", "get", 200, await api.get("/admin/payments", ADMIN))
    _check(spec, "/admin/audit", "get", 200, await api.get("/admin/audit?limit=5", ADMIN))
    disputes = await api.get(f"/payments/{paid['id']}/disputes", SERVICE)
    _check(spec, "/payments/{id}/disputes", "get", 200, disputes)
    summary = await api.get("/admin/transactions?group_by=day", ADMIN)
    _check(spec, "/admin/transactions", "get", 200, summary)

    declined = await api.create(order_id="1043")
    card_error = await api.post(
        f"/payments/{declined['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        status=402,
    )
    _check(spec, "/payments/{id}/confirm", "post", 402, card_error)
    _check(spec, "/payments/{id}", "get", 404, await api.get("/payments/pay_nope", status=404))
    bad = await api.create(status=422, amount="12")
    _check(spec, "/payments/intents", "post", 422, bad)
    for path in ("/health", "/health/ready"):
        response = await api.client.get(path)
        _check(spec, path, "get", response.status, await response.json())


async def test_docs_page_head_and_local_assets(client: TestClient[Any, Any]) -> None:
    head = await client.head("/docs")
    assert head.status == 200
    page = await (await client.get("/docs")).text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/static/swagger/") for a in assets)
    assert "/openapi.json" in page
    assert "Authorization" not in page  # no token baked into the page
    assert (await client.get("/payments", headers=CUSTOMER)).status == 200
