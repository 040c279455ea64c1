from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import Api


async def test_metrics_count_requests_by_route(api: Api, client: TestClient[Any, Any]) -> None:
    payment = await api.create()
    await api.get(f"/payments/{payment['id']}")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert (
        'paysvc_http_requests_total{method="POST",route="/payments/intents",status="201"} 1.0'
        in text
    )
    assert 'route="/payments/{id}",status="200"} 1.0' in text
    assert payment["id"] not in text  # routes, not ids: bounded label cardinality
