"""Rate limits through HTTP: per principal once authenticated, per client IP otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import CUSTOMER, OTHER_CUSTOMER, SERVICE
from tests.security.helpers import client_with

BAD_TOKEN = {"Authorization": "Bearer not-a-token"}


@pytest.fixture
async def limited(aiohttp_client: Callable[..., Any], database_url: str) -> TestClient[Any, Any]:
    # one token per 20 s: a slow machine cannot refill a bucket in the middle of a test
    return await client_with(
        aiohttp_client, database_url, RATE_LIMIT_PER_SECOND="0.05", RATE_LIMIT_BURST="3"
    )


async def statuses(
    client: TestClient[Any, Any], path: str, headers: dict[str, str], n: int
) -> list[int]:
    result = []
    for _ in range(n):
        response = await client.get(path, headers=headers)
        result.append(response.status)
    return result


async def test_a_burst_over_the_limit_gets_429_with_retry_after(
    limited: TestClient[Any, Any],
) -> None:
    assert await statuses(limited, "/payments", CUSTOMER, 3) == [200, 200, 200]
    response = await limited.get("/payments", headers=CUSTOMER)
    assert response.status == 429
    assert response.headers["Retry-After"] == "20"
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert error["request_id"] == response.headers["X-Request-Id"]
    # writes count too, and nothing is done when refused
    refused = await limited.post(
        "/payments/intents",
        json={"order_id": "1", "amount": 100, "currency": "usd"},
        headers=CUSTOMER,
    )
    assert refused.status == 429
    listed = await limited.get("/payments", headers=OTHER_CUSTOMER)
    assert (await listed.json())["data"] == []


async def test_other_principals_are_unaffected(limited: TestClient[Any, Any]) -> None:
    assert await statuses(limited, "/payments", CUSTOMER, 5) == [200, 200, 200, 429, 429]
    assert await statuses(limited, "/payments", OTHER_CUSTOMER, 3) == [200, 200, 200]
    assert await statuses(limited, "/payments", SERVICE, 3) == [200, 200, 200]


async def test_probes_and_metrics_are_never_limited(limited: TestClient[Any, Any]) -> None:
    assert await statuses(limited, "/payments", CUSTOMER, 4) == [200, 200, 200, 429]
    assert set(await statuses(limited, "/health", {}, 10)) == {200}
    assert set(await statuses(limited, "/metrics", {}, 10)) == {200}
    assert set(await statuses(limited, "/health", CUSTOMER, 5)) == {200}


async def test_requests_without_valid_credentials_are_limited_per_ip(
    limited: TestClient[Any, Any],
) -> None:
    assert await statuses(limited, "/payments", BAD_TOKEN, 5) == [401, 401, 401, 429, 429]
    assert await statuses(limited, "/payments", {}, 2) == [429, 429]  # same IP, no token
    # a caller with valid credentials behind the same IP is limited as itself only
    assert await statuses(limited, "/payments", CUSTOMER, 3) == [200, 200, 200]


async def test_the_public_docs_are_limited_per_ip(limited: TestClient[Any, Any]) -> None:
    assert await statuses(limited, "/openapi.json", {}, 4) == [200, 200, 200, 429]
