"""Card numbers outside request bodies (request id, Idempotency-Key, path, query string) and in
disguise (no-break or zero-width spaces, dots, JSON numbers, split arrays): refused in strict
mode, never echoed, and never found afterwards in the database, the log or the audit export."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from paysvc.audit import chain
from paysvc.bootstrap import Container
from paysvc.idempotency.models import IdempotencyKey
from paysvc.idempotency.service import hash_key
from paysvc.web.keys import CONTAINER
from tests.conftest import CUSTOMER, ENCRYPTION_KEY, SERVICE, Api
from tests.security.helpers import captured_logs, client_with, raw_database
from tests.support import rows

VISA, MASTERCARD, AMEX, UNIONPAY = (
    "4242424242424242",
    "5555555555554444",
    "378282246310005",
    "6200000000000005",
)
NBSP = "4242\u00a04242\u00a04242\u00a04242"
ZERO_WIDTH = "5555\u200b5555\u200b5555\u200b4444"
DOTTED = "3782.822463.10005"
SENT = [VISA, MASTERCARD, AMEX, UNIONPAY, NBSP, ZERO_WIDTH, DOTTED]
INTENT = {"order_id": "1042", "amount": 1999, "currency": "usd"}
FOR_17 = {**INTENT, "customer_id": "17"}


async def audit_export(container: Container) -> str:
    await chain.seal_pending(container.db, container.keyring)
    out = io.StringIO()
    await chain.export(container.db, out)
    return out.getvalue()


def assert_nowhere(pans: list[str], *places: str | bytes) -> None:
    """No PAN, in any form it was sent or as bare digits, in any of `places`."""
    forms = {form for pan in pans for form in (pan, re.sub(r"\D", "", pan))}
    for place in places:
        text = place.decode("utf-8", errors="replace") if isinstance(place, bytes) else place
        for form in forms:
            assert form not in text, (form, text[:200])


async def test_strict_mode_refuses_card_numbers_outside_the_body(
    client: TestClient[Any, Any], container: Container, database_url: str, api: Api
) -> None:
    payment = await api.create()
    with captured_logs() as logs:
        cases: list[tuple[str, str, dict[str, str], Any, str]] = [
            ("GET", "/payments", {"X-Request-Id": VISA}, None, "X-Request-Id"),
            (
                "POST",
                "/payments/intents",
                {"Idempotency-Key": MASTERCARD},
                INTENT,
                "Idempotency-Key",
            ),
            (
                "POST",
                "/payments/intents",
                {"Idempotency-Key": f"k-{NBSP}"},
                INTENT,
                "Idempotency-Key",
            ),
            ("POST", f"/payments/{AMEX}/confirm", {"Idempotency-Key": "k1"}, {}, "path"),
            ("GET", f"/payments/{UNIONPAY}", {}, None, "path"),
            ("GET", f"/payments?order_id={ZERO_WIDTH}", {}, None, "query"),
            ("GET", "/payments?order_id=3782%2E822463%2E10005", {}, None, "query"),
            ("POST", "/payments/intents", {}, {**INTENT, "order_id": NBSP}, "$.order_id"),
            (
                "POST",
                "/payments/intents",
                {},
                {**INTENT, "metadata": {"n": ZERO_WIDTH}},
                "$.metadata.n",
            ),
        ]
        for method, path, headers, body, param in cases:
            response = await client.request(
                method, path, json=body, headers={**CUSTOMER, **headers}
            )
            error = (await response.json())["error"]
            assert (response.status, error["code"], error["param"]) == (422, "raw_card_data", param)
            assert re.fullmatch(r"req_[0-9a-f]{24}", response.headers["X-Request-Id"])
            assert_nowhere(SENT, str(error), str(dict(response.headers)))
        raw = await client.post(
            f"/payments/{payment['id']}/cancel",
            data=b'{"reason": 4.242424242424242e15}',
            headers={**CUSTOMER, "Content-Type": "application/json"},
        )
        assert (await raw.json())["error"]["param"] == "$.reason"
        split = await client.post(
            "/payments/intents",
            json={
                **INTENT,
                "metadata": {},
                "description": None,
                "x": ["4242", "4242", "4242", "4242"],
            },
            headers=CUSTOMER,
        )
        assert (await split.json())["error"]["code"] == "raw_card_data"

        # Unauthenticated: 401, audited, with a generated request id and the path masked.
        for headers in (
            {"X-Request-Id": VISA},
            {"X-Request-Id": AMEX, "Authorization": "Bearer x"},
        ):
            response = await client.get(f"/payments/{NBSP}", headers=headers)
            assert response.status == 401
            assert response.headers["X-Request-Id"] not in (VISA, AMEX)
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"
    assert await rows(container, IdempotencyKey) == []
    export = await audit_export(container)
    assert export.count('"status": 401') == 2  # both 401s audited, masked
    assert_nowhere(SENT, await raw_database(database_url), logs.getvalue(), export)


async def test_keys_and_paths_are_stored_hashed_and_as_route_templates(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    # Permissive mode lets the card numbers through the guard: storage must still not keep them.
    client = await client_with(aiohttp_client, database_url, PCI_COMPLIANCE_MODE="permissive")
    container = client.app[CONTAINER]
    with captured_logs() as logs:
        first = await client.post(
            "/payments/intents", json=FOR_17, headers={**SERVICE, "Idempotency-Key": VISA}
        )
        again = await client.post(
            "/payments/intents", json=FOR_17, headers={**SERVICE, "Idempotency-Key": VISA}
        )
        missing = await client.post(
            f"/payments/{MASTERCARD}/confirm",
            json={"payment_method": "pm_card_visa"},
            headers={**SERVICE, "Idempotency-Key": "confirm-1", "X-Request-Id": AMEX},
        )
        replayed = await client.post(
            f"/payments/{MASTERCARD}/confirm",
            json={"payment_method": "pm_card_visa"},
            headers={**SERVICE, "Idempotency-Key": "confirm-1"},
        )
    assert (first.status, again.status) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await first.json())["id"] == (await again.json())["id"]
    assert (missing.status, replayed.status) == (404, 404)  # a stored result, replayed
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert missing.headers["X-Request-Id"] != AMEX
    records = await rows(container, IdempotencyKey)
    assert sorted(r.path for r in records) == ["/payments/intents", "/payments/{id}/confirm"]
    assert {r.key for r in records} == {
        hash_key(container.keyring, VISA),
        hash_key(container.keyring, "confirm-1"),
    }
    export = await audit_export(container)
    assert_nowhere(
        [VISA, MASTERCARD, AMEX], await raw_database(database_url), logs.getvalue(), export
    )


async def test_idempotency_rows_hold_hashes(
    client: TestClient[Any, Any], container: Container
) -> None:
    response = await client.post(
        "/payments/intents", json=INTENT, headers={**CUSTOMER, "Idempotency-Key": "order-1042-a"}
    )
    assert response.status == 201
    [record] = await rows(container, IdempotencyKey)
    assert record.key == hash_key(container.keyring, "order-1042-a")
    assert record.key.startswith(container.keyring.active_id + ":")
    assert "order-1042-a" not in record.key
    assert record.path == "/payments/intents"
    assert len(record.fingerprint) == 64


async def test_a_hashed_key_is_still_recognised_after_a_key_rotation(
    aiohttp_client: Callable[..., Any], database_url: str, client: TestClient[Any, Any]
) -> None:
    first = await client.post(
        "/payments/intents", json=INTENT, headers={**CUSTOMER, "Idempotency-Key": "rotate-me"}
    )
    assert first.status == 201
    # ENCRYPTION_KEY rotated: the old key (conftest's) is retired, a new one is active.
    rotated = await client_with(
        aiohttp_client,
        database_url,
        ENCRYPTION_KEY=base64.b64encode(b"n" * 32).decode(),
        ENCRYPTION_KEYS_RETIRED=ENCRYPTION_KEY,
    )
    again = await rotated.post(
        "/payments/intents", json=INTENT, headers={**CUSTOMER, "Idempotency-Key": "rotate-me"}
    )
    assert (again.status, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert (await again.json())["id"] == (await first.json())["id"]
