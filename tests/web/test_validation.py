"""Request validation and the error contract at the edge: 400/413/415/422, unknown routes,
request ids, and no stack traces."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from paysvc.bootstrap import Container
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api

ERROR_KEYS = {"type", "code", "message", "param", "request_id"}
VALID = {"order_id": "1042", "amount": 1999, "currency": "usd"}


def assert_error(body: dict[str, Any], type_: str, param: str | None = None) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["type"] == type_
    assert error["request_id"]
    if param is not None:
        assert error["param"] == param, error
    text = json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text and "SELECT" not in text
    return dict(error)


async def create_status(api: Api, body: Any, headers: dict[str, str] = CUSTOMER) -> Any:
    response = await api.client.post("/payments/intents", json=body, headers=headers)
    return response.status, await response.json()


@pytest.mark.parametrize(
    "amount", [0, -1, 19.99, 1999.0, "1999", True, False, None, 100_000_000, 10**30, [1999], {}]
)
async def test_amount_must_be_a_positive_integer_in_range(api: Api, amount: Any) -> None:
    status, body = await create_status(api, {**VALID, "amount": amount})
    assert status == 422
    assert_error(body, "invalid_request_error", "amount")


async def test_amount_limits_are_inclusive(api: Api) -> None:
    for order, amount in enumerate((1, 99_999_999)):
        created = await api.create(amount=amount, order_id=str(order))
        assert created["amount"] == amount


@pytest.mark.parametrize("currency", ["xyz", "us", "usdd", "", 840, None, "u$d"])
async def test_unknown_currency(api: Api, currency: Any) -> None:
    status, body = await create_status(api, {**VALID, "currency": currency})
    assert status == 422
    assert_error(body, "invalid_request_error", "currency")


@pytest.mark.parametrize("given", ["USD", "Usd", "usd"])
async def test_currency_any_case_returned_lowercase(api: Api, given: str) -> None:
    created = await api.create(currency=given)
    assert created["currency"] == "usd"
    assert (await api.get(f"/payments/{created['id']}"))["currency"] == "usd"


async def test_zero_decimal_currency(api: Api) -> None:
    payment = await api.paid(currency="JPY", amount=500)
    assert (payment["currency"], payment["amount"], payment["amount_captured"]) == ("jpy", 500, 500)


@pytest.mark.parametrize(
    "field", ["status", "amount_captured", "amount_capturable", "amount_refunded", "id", "bogus"]
)
async def test_unknown_and_server_owned_fields(api: Api, field: str) -> None:
    status, body = await create_status(api, {**VALID, field: "captured"})
    assert status == 422
    error = assert_error(body, "invalid_request_error", field)
    assert field in error["message"]
    assert (await api.get("/payments", ADMIN))["data"] == []


@pytest.mark.parametrize(
    ("path_suffix", "body", "param"),
    [
        ("/confirm", {"payment_method": "pm_card_visa", "amount": 1}, "amount"),
        ("/confirm", {"payment_method": ""}, "payment_method"),
        ("/confirm", {"payment_method": 42}, "payment_method"),
        ("/capture", {"amount": 10}, "amount"),
        ("/cancel", {"status": "cancelled"}, "status"),
        ("/cancel", {"refund_if_captured": "maybe"}, "refund_if_captured"),
    ],
)
async def test_other_bodies_reject_unknowns(
    api: Api, path_suffix: str, body: dict[str, Any], param: str
) -> None:
    payment = await api.create()
    response = await api.client.post(
        f"/payments/{payment['id']}{path_suffix}", json=body, headers=SERVICE
    )
    assert response.status == 422
    assert_error(await response.json(), "invalid_request_error", param)


@pytest.mark.parametrize(
    ("metadata", "param_prefix"),
    [
        ({f"k{i}": "v" for i in range(21)}, "metadata"),
        ({"k" * 41: "v"}, "metadata"),
        ({"": "v"}, "metadata"),
        ({"k": "v" * 501}, "metadata"),
        ({"k": 1}, "metadata"),
        ({"k": None}, "metadata"),
        ({"k": {"nested": "x"}}, "metadata"),
        ({"k": ["a"]}, "metadata"),
        ("not-an-object", "metadata"),
    ],
)
async def test_metadata_limits(api: Api, metadata: Any, param_prefix: str) -> None:
    status, body = await create_status(api, {**VALID, "metadata": metadata})
    assert status == 422
    error = assert_error(body, "invalid_request_error")
    assert error["param"].startswith(param_prefix)


async def test_metadata_at_the_limits_is_accepted(api: Api) -> None:
    metadata = {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(20)}
    created = await api.create(metadata=metadata)
    assert created["metadata"] == metadata


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "d" * 501),
        ("description", None),
        ("receipt_email", "not-an-email"),
        ("receipt_email", "a@"),
        ("receipt_email", 5),
        ("order_id", ""),
        ("order_id", "o" * 65),
        ("order_id", 1042),
        ("capture_method", "later"),
        ("customer_id", ""),
        ("payment_method", ""),
    ],
)
async def test_field_limits(api: Api, field: str, value: Any) -> None:
    status, body = await create_status(api, {**VALID, field: value}, SERVICE)
    assert status == 422
    assert_error(body, "invalid_request_error", field)


@pytest.mark.parametrize("field", ["order_id", "amount", "currency"])
async def test_required_fields(api: Api, field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    status, error = await create_status(api, body)
    assert status == 422
    assert_error(error, "invalid_request_error", field)


async def test_description_at_limit_and_email_ok(api: Api) -> None:
    created = await api.create(description="d" * 500, receipt_email="buyer@example.com")
    assert created["description"] == "d" * 500


# -- the body itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b'{"amount": 1,}', b"\xff\xfe", b"{'a': 1}", b"NaN-ish"])
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    response = await api.client.post(
        "/payments/intents",
        data=raw,
        headers={**CUSTOMER, "Content-Type": "application/json"},
    )
    assert response.status == 400
    error = assert_error(await response.json(), "invalid_request_error")
    assert error["code"] == "malformed_request"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 30_000 + "]" * 30_000,
        '{"order_id": "1", "amount": 1, "currency": "usd", "metadata": '
        + '{"a": ' * 5_000
        + "1"
        + "}" * 5_001,
    ],
    ids=["arrays", "objects"],
)
async def test_deeply_nested_json_is_400_not_500(api: Api, raw: str) -> None:
    response = await api.client.post(
        "/payments/intents", data=raw, headers={**CUSTOMER, "Content-Type": "application/json"}
    )
    assert response.status == 400
    error = assert_error(await response.json(), "invalid_request_error")
    assert error["code"] == "malformed_request"


@pytest.mark.parametrize("value", [[VALID], "text", 5, None, True])
async def test_non_object_json_is_422(api: Api, value: Any) -> None:
    response = await api.client.post(
        "/payments/intents",
        data=json.dumps(value),
        headers={**CUSTOMER, "Content-Type": "application/json"},
    )
    assert response.status == 422
    assert_error(await response.json(), "invalid_request_error")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_wrong_content_type_is_415(api: Api, content_type: str) -> None:
    response = await api.client.post(
        "/payments/intents",
        data=json.dumps(VALID),
        headers={**CUSTOMER, "Content-Type": content_type},
    )
    assert response.status == 415
    assert_error(await response.json(), "invalid_request_error")
    assert (await api.get("/payments", ADMIN))["data"] == []


async def test_json_with_charset_is_fine(api: Api) -> None:
    response = await api.client.post(
        "/payments/intents",
        data=json.dumps(VALID).encode(),
        headers={**CUSTOMER, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 201


async def test_body_over_64_kib_is_413_in_the_contract_shape(api: Api) -> None:
    body = {**VALID, "description": "x" * (65 * 1024)}
    response = await api.client.post("/payments/intents", json=body, headers=CUSTOMER)
    assert response.status == 413
    error = assert_error(await response.json(), "invalid_request_error")
    assert error["code"] == "request_too_large"
    assert error["request_id"] == response.headers["X-Request-Id"]


async def test_body_just_under_64_kib_reaches_validation(api: Api) -> None:
    filler = "x" * (60 * 1024)
    response = await api.client.post(
        "/payments/intents", json={**VALID, "description": filler}, headers=CUSTOMER
    )
    assert response.status == 422
    assert_error(await response.json(), "invalid_request_error", "description")


# -- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/payments/x/explode", "/admin/nothing", "/v1/payments"])
async def test_unknown_route_is_404_in_the_contract_shape(api: Api, path: str) -> None:
    response = await api.client.get(path, headers=CUSTOMER)
    assert response.status == 404
    assert_error(await response.json(), "not_found")


async def test_wrong_method_is_405_in_the_contract_shape(api: Api) -> None:
    response = await api.client.delete("/payments/intents", headers=CUSTOMER)
    assert response.status == 405
    assert_error(await response.json(), "invalid_request_error")


async def test_unexpected_error_is_500_without_details(
    api: Api, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals: SELECT * FROM payments")

    monkeypatch.setattr(container.payments, "get", explode)
    response = await api.client.get("/payments/pay_x", headers=CUSTOMER)
    assert response.status == 500
    error = assert_error(await response.json(), "api_error")
    assert "secret internals" not in error["message"]


# -- request ids -------------------------------------------------------------------------------


async def test_request_id_echoed_when_valid(api: Api) -> None:
    for path, headers in (("/health", {}), ("/payments", CUSTOMER), ("/nope", CUSTOMER)):
        response = await api.client.get(path, headers={**headers, "X-Request-Id": "abc-123.x_y"})
        assert response.headers["X-Request-Id"] == "abc-123.x_y"
    response = await api.client.get(
        "/payments/pay_missing", headers={**CUSTOMER, "X-Request-Id": "r1"}
    )
    assert (await response.json())["error"]["request_id"] == "r1"


@pytest.mark.parametrize(
    "incoming",
    [None, "", "has space", "x" * 65, "semi;colon", "é", "a:b", "4242424242424242"],
)
async def test_request_id_generated_when_absent_or_invalid(api: Api, incoming: str | None) -> None:
    headers = dict(CUSTOMER)
    if incoming is not None:
        headers["X-Request-Id"] = incoming
    first = await api.client.get("/payments", headers=headers)
    second = await api.client.get("/payments", headers=headers)
    generated = first.headers["X-Request-Id"]
    assert re.fullmatch(r"req_[0-9a-f]{24}", generated)
    assert generated != second.headers["X-Request-Id"]
    unauth = await api.client.get("/payments")
    assert (await unauth.json())["error"]["request_id"] == unauth.headers["X-Request-Id"]


# -- strings no database can store ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"order_id": "a\u0000b"}, "order_id"),
        ({"order_id": "\ud800"}, "order_id"),
        ({"description": "nul\u0000"}, "description"),
        ({"payment_method": "pm_card_visa\u0000"}, "payment_method"),
        ({"metadata": {"k": "v\u0000"}}, "metadata[k]"),
        ({"metadata": {"k\u0000": "v"}}, "metadata"),
        ({"metadata": {"k": "\udfff"}}, "metadata[k]"),
    ],
)
async def test_nul_and_lone_surrogates_are_422_not_500(
    api: Api, extra: dict[str, Any], param: str
) -> None:
    """PostgreSQL cannot store NUL; no UTF-8 database can store a lone surrogate."""
    status, body = await create_status(api, {**VALID, **extra}, SERVICE)
    assert status == 422, body
    assert_error(body, "invalid_request_error", param)
    assert (await api.get("/payments", ADMIN))["data"] == []


@pytest.mark.parametrize("query", ["order_id=a%00b", "starting_after=pay_%00", "status=%00"])
async def test_nul_in_query_is_422(api: Api, query: str) -> None:
    response = await api.client.get(f"/payments?{query}", headers=CUSTOMER)
    assert response.status == 422
    assert_error(await response.json(), "invalid_request_error")
    response = await api.client.get(f"/admin/payments?customer_id=%00&{query}", headers=ADMIN)
    assert response.status == 422


@pytest.mark.parametrize("suffix", ["", "/confirm", "/cancel"])
async def test_nul_in_a_payment_id_is_an_ordinary_404(api: Api, suffix: str) -> None:
    method = "GET" if not suffix else "POST"
    odd = await api.client.request(
        method, f"/payments/pay_%00x{suffix}", headers=CUSTOMER, json={} if suffix else None
    )
    missing = await api.client.request(
        method, f"/payments/pay_nothere{suffix}", headers=CUSTOMER, json={} if suffix else None
    )
    assert odd.status == missing.status == 404
    odd_body, missing_body = await odd.json(), await missing.json()
    odd_body["error"].pop("request_id")
    missing_body["error"].pop("request_id")
    assert odd_body == missing_body
