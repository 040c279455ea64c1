"""Response headers: no caching of API answers, no version banner, browser hardening, and a
Content-Security-Policy that still lets Swagger UI load."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import CUSTOMER

HARDENED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def test_api_answers_are_hardened(client: TestClient[Any, Any]) -> None:
    for method, path, headers, status in [
        ("GET", "/payments", CUSTOMER, 200),
        ("GET", "/payments/pay_missing", CUSTOMER, 404),
        ("GET", "/payments", {}, 401),
        ("POST", "/payments/intents", CUSTOMER, 422),
        ("GET", "/no/such/route", CUSTOMER, 404),
        ("GET", "/health", {}, 200),
        ("GET", "/metrics", {}, 200),
    ]:
        response = await client.request(method, path, headers=headers, json={})
        assert response.status == status, path
        for name, value in HARDENED.items():
            assert response.headers[name] == value, (path, name)
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
        assert response.headers["Server"] == "paysvc", path
        assert "aiohttp" not in str(response.headers).lower(), path


async def test_swagger_ui_loads_under_its_policy(client: TestClient[Any, Any]) -> None:
    page = await client.get("/docs")
    assert page.status == 200
    html = await page.text()
    policy = page.headers["Content-Security-Policy"]
    directives = dict(
        [*part.split(" ", 1), ""][:2] for part in (p.strip() for p in policy.split(";"))
    )
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    (inline,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert directives["script-src"] == f"'self' 'sha256-{digest}'"
    assert page.headers["Cache-Control"] == "no-store"

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/static/swagger/") for a in assets)  # same origin
    for asset in assets:
        response = await client.get(asset)
        assert response.status == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-store" not in response.headers.get("Cache-Control", "")
    spec = await client.get("/openapi.json")
    assert spec.status == 200 and "/admin/audit" in (await spec.json())["paths"]
