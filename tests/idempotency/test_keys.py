"""Idempotency-Key through the real HTTP stack: replay, mismatch, scoping, what is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxCharge
from paysvc.idempotency.models import IdempotencyKey, KeyState
from paysvc.idempotency.service import hash_key
from paysvc.payments.models import Payment
from tests.conftest import CUSTOMER, OTHER_CUSTOMER, SERVICE, Api, auth
from tests.support import count, rows

INTENT = {"order_id": "1042", "amount": 1999, "currency": "usd"}
Reply = tuple[int, dict[str, Any], CIMultiDictProxy[str]]


async def send(
    client: TestClient[Any, Any],
    path: str,
    body: Any,
    key: str | None,
    headers: dict[str, str] = CUSTOMER,
) -> Reply:
    extra = {} if key is None else {"Idempotency-Key": key}
    response = await client.post(path, json=body, headers={**headers, **extra})
    return response.status, await response.json(), response.headers


async def test_same_request_is_replayed_once_executed(
    client: TestClient[Any, Any], container: Container
) -> None:
    status, first, headers = await send(client, "/payments/intents", INTENT, "create-1")
    assert status == 201
    assert "Idempotent-Replayed" not in headers
    # Key order and whitespace do not make a different request.
    reordered = {"currency": "usd", "amount": 1999, "order_id": "1042"}
    status, again, headers = await send(client, "/payments/intents", reordered, "create-1")
    assert (status, again) == (201, first)
    assert headers["Idempotent-Replayed"] == "true"
    assert headers["Original-Request"]
    assert headers["X-Request-Id"] != headers["Original-Request"]
    assert await count(container, Payment) == 1

    confirm = f"/payments/{first['id']}/confirm"
    body = {"payment_method": "pm_card_visa"}
    status, charged, _ = await send(client, confirm, body, "confirm-1")
    assert (status, charged["status"]) == (200, "captured")
    status, replayed, headers = await send(client, confirm, body, "confirm-1")
    assert (status, replayed) == (200, charged)
    assert headers["Idempotent-Replayed"] == "true"
    assert await count(container, SandboxCharge) == 1


async def test_same_key_different_request_is_422(client: TestClient[Any, Any]) -> None:
    await send(client, "/payments/intents", INTENT, "k")
    status, body, _ = await send(client, "/payments/intents", {**INTENT, "amount": 2000}, "k")
    assert status == 422
    assert body["error"]["type"] == "idempotency_error"
    assert body["error"]["code"] == "idempotency_key_reused"
    status, body, _ = await send(client, "/payments/pay_x/cancel", INTENT, "k")
    assert (status, body["error"]["type"]) == (422, "idempotency_error")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "clé"])
async def test_malformed_key_is_400(
    client: TestClient[Any, Any], container: Container, key: str
) -> None:
    status, body, _ = await send(client, "/payments/intents", INTENT, key)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "idempotency_key_invalid"
    assert await count(container, Payment) == 0


async def test_longest_key_and_spaces_are_fine(client: TestClient[Any, Any]) -> None:
    for key in ("x" * 255, "order 1042 / attempt #1 ~"):
        status, _, _ = await send(client, "/payments/intents", INTENT, key)
        assert status == 201


async def test_keys_are_scoped_per_principal(
    client: TestClient[Any, Any], container: Container
) -> None:
    status_a, mine, headers_a = await send(client, "/payments/intents", INTENT, "shared")
    status_b, theirs, headers_b = await send(
        client, "/payments/intents", INTENT, "shared", OTHER_CUSTOMER
    )
    assert (status_a, status_b) == (201, 201)
    assert mine["id"] != theirs["id"]
    assert (mine["customer_id"], theirs["customer_id"]) == ("17", "99")
    assert "Idempotent-Replayed" not in headers_a and "Idempotent-Replayed" not in headers_b
    assert await count(container, Payment) == 2


async def test_declined_confirm_replays_its_402_without_a_second_charge(
    client: TestClient[Any, Any], container: Container, api: Api
) -> None:
    payment = await api.create()
    confirm = f"/payments/{payment['id']}/confirm"
    body = {"payment_method": "pm_card_chargeDeclined"}
    status, declined, _ = await send(client, confirm, body, "decline")
    assert status == 402
    assert declined["error"]["payment"]["status"] == "failed"
    status, replayed, headers = await send(client, confirm, body, "decline")
    assert (status, replayed) == (402, declined)
    assert headers["Idempotent-Replayed"] == "true"
    assert await count(container, SandboxCharge) == 1


async def test_state_conflicts_are_results_and_are_stored(
    client: TestClient[Any, Any], api: Api
) -> None:
    payment = await api.create()
    capture = f"/payments/{payment['id']}/capture"
    status, conflict, _ = await send(client, capture, {}, "cap", SERVICE)
    assert (status, conflict["error"]["type"]) == (409, "state_conflict")
    status, replayed, headers = await send(client, capture, {}, "cap", SERVICE)
    assert (status, replayed) == (409, conflict)
    assert headers["Idempotent-Replayed"] == "true"


async def test_validation_failures_are_not_stored(
    client: TestClient[Any, Any], container: Container
) -> None:
    status, _, _ = await send(client, "/payments/intents", {**INTENT, "amount": 0}, "v")
    assert status == 422
    status, _, _ = await send(client, "/payments/intents", {**INTENT, "bogus": 1}, "v")
    assert status == 422
    # Not stored: the same key with a valid (different) body executes.
    status, _, headers = await send(client, "/payments/intents", INTENT, "v")
    assert status == 201
    assert "Idempotent-Replayed" not in headers
    assert await count(container, IdempotencyKey) == 1


async def test_rejected_credentials_and_permissions_are_not_stored(
    client: TestClient[Any, Any], container: Container, api: Api
) -> None:
    bad = {"Authorization": "Bearer not-a-token"}
    status, _, _ = await send(client, "/payments/intents", INTENT, "a", bad)
    assert status == 401
    payment = await api.create()
    capture = f"/payments/{payment['id']}/capture"
    status, _, _ = await send(client, capture, {}, "a")  # customers may not capture
    assert status == 403
    assert await count(container, IdempotencyKey) == 0
    status, _, headers = await send(client, "/payments/intents", INTENT, "a")
    assert status == 201 and "Idempotent-Replayed" not in headers


async def test_malformed_json_and_wrong_content_type_are_not_stored(
    client: TestClient[Any, Any], container: Container
) -> None:
    headers = {**CUSTOMER, "Idempotency-Key": "m", "Content-Type": "application/json"}
    response = await client.post("/payments/intents", data=b"{nope", headers=headers)
    assert response.status == 400
    headers["Content-Type"] = "text/plain"
    response = await client.post("/payments/intents", data=b"{}", headers=headers)
    assert response.status == 415
    assert await count(container, IdempotencyKey) == 0


async def test_requests_without_a_key_or_not_post_store_nothing(
    client: TestClient[Any, Any], container: Container
) -> None:
    status, created, _ = await send(client, "/payments/intents", INTENT, None)
    assert status == 201
    response = await client.get(
        f"/payments/{created['id']}", headers={**CUSTOMER, "Idempotency-Key": "g"}
    )
    assert response.status == 200
    assert await count(container, IdempotencyKey) == 0


async def test_twenty_concurrent_requests_with_one_key_execute_once(
    client: TestClient[Any, Any], container: Container, api: Api
) -> None:
    replies = await asyncio.gather(
        *(send(client, "/payments/intents", INTENT, "burst") for _ in range(20))
    )
    statuses = sorted(status for status, _, _ in replies)
    assert set(statuses) <= {201, 409}, statuses
    assert await count(container, Payment) == 1
    created = {body["id"] for status, body, _ in replies if status == 201}
    assert len(created) == 1
    fresh = [h for status, _, h in replies if status == 201 and "Idempotent-Replayed" not in h]
    assert len(fresh) == 1
    for status, body, _ in replies:
        if status == 409:
            assert body["error"]["code"] == "idempotency_key_in_use"

    payment_id = created.pop()
    confirm = f"/payments/{payment_id}/confirm"
    replies = await asyncio.gather(
        *(send(client, confirm, {"payment_method": "pm_card_visa"}, "pay") for _ in range(20))
    )
    assert {status for status, _, _ in replies} <= {200, 409}
    assert sum(1 for _, _, h in replies if "Idempotent-Replayed" not in h) >= 1
    assert await count(container, SandboxCharge) == 1
    assert (await api.get(f"/payments/{payment_id}"))["status"] == "captured"
    [record] = await rows(
        container, IdempotencyKey, IdempotencyKey.key == hash_key(container.keyring, "pay")
    )
    assert record.state == KeyState.DONE


async def test_stored_responses_are_encrypted_at_rest(
    client: TestClient[Any, Any], container: Container
) -> None:
    body = {**INTENT, "description": "secret socks", "metadata": {"gift": "for-alice"}}
    await send(client, "/payments/intents", body, "enc")
    [record] = await rows(container, IdempotencyKey)
    assert record.response_body_enc is not None
    assert "secret socks" not in record.response_body_enc
    assert "for-alice" not in record.response_body_enc
    assert "secret socks" in (record.response_body or "")


async def test_service_and_admin_have_their_own_key_space(
    client: TestClient[Any, Any], container: Container
) -> None:
    body = {**INTENT, "customer_id": "17"}
    await send(client, "/payments/intents", body, "svc", SERVICE)
    status, _, headers = await send(client, "/payments/intents", body, "svc", auth("x", "admin"))
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert await count(container, Payment) == 2
