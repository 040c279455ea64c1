"""Local (HS256) authentication failures, platform tokens, issuer/audience, and role rules."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from paysvc.auth.principal import Role
from paysvc.auth.tokens import TokenVerifier
from paysvc.bootstrap import build_container
from paysvc.errors import AuthenticationFailed
from paysvc.web.app import create_app
from tests.conftest import ADMIN, CUSTOMER, JWT_SECRET, SERVICE, Api, make_settings

ERROR_KEYS = {"type", "code", "message", "param", "request_id"}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "17", "type": "access", "exp": int(time.time()) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], secret: str = JWT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes | None) -> str:
    """A token built by hand, e.g. `alg: none` or an RS256 header HMAC-signed with our secret."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    if signature is None:
        signature = hmac.new(JWT_SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(signature)


def rs256_token() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(role="admin"), key, algorithm="RS256")


BAD_HEADERS: dict[str, Callable[[], dict[str, str]]] = {
    "missing": lambda: {},
    "empty": lambda: {"Authorization": ""},
    "basic scheme": lambda: {"Authorization": "Basic " + _b64(b"admin:admin")},
    "token without scheme": lambda: {"Authorization": signed(claims())},
    "bearer without token": lambda: {"Authorization": "Bearer "},
    "garbage": lambda: {"Authorization": "Bearer not-a-jwt"},
    "expired": lambda: {"Authorization": f"Bearer {signed(claims(exp=int(time.time()) - 5))}"},
    "alg none": lambda: {
        "Authorization": "Bearer " + forged({"alg": "none", "typ": "JWT"}, claims(), b"")
    },
    "alg none, no signature part": lambda: {
        "Authorization": "Bearer " + forged({"alg": "none"}, claims(role="admin"), b"").rstrip(".")
    },
    "HS512": lambda: {"Authorization": f"Bearer {signed(claims(), alg='HS512')}"},
    "RS256 header, HMAC-signed": lambda: {
        "Authorization": "Bearer " + forged({"alg": "RS256", "typ": "JWT"}, claims(), None)
    },
    "RS256 really signed": lambda: {"Authorization": f"Bearer {rs256_token()}"},
    "wrong signature": lambda: {
        "Authorization": f"Bearer {signed(claims(), 'another-secret-' + 'y' * 40)}"
    },
    "tampered payload": lambda: {
        "Authorization": "Bearer " + _tamper(signed(claims()), claims(role="admin"))
    },
    "refresh token": lambda: {"Authorization": f"Bearer {signed(claims(type='refresh'))}"},
    "no exp": lambda: {"Authorization": f"Bearer {signed(claims(exp=None))}"},
    "unknown role": lambda: {"Authorization": f"Bearer {signed(claims(role='superuser'))}"},
    "no principal": lambda: {"Authorization": f"Bearer {signed(claims(sub=None))}"},
    "empty principal": lambda: {"Authorization": f"Bearer {signed(claims(sub=''))}"},
}


def _tamper(token: str, payload: dict[str, Any]) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{_b64(json.dumps(payload).encode())}.{signature}"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("case", list(BAD_HEADERS))
async def test_bad_credentials_are_401_in_the_contract_shape(api: Api, case: str) -> None:
    headers = BAD_HEADERS[case]()
    for method, path in (("GET", "/payments"), ("POST", "/payments/intents")):
        response = await api.client.request(
            method, path, headers=headers, json={"order_id": "1", "amount": 1, "currency": "usd"}
        )
        assert response.status == 401, await response.text()
        body = await response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == ERROR_KEYS
        assert body["error"]["type"] == "authentication_error"
        assert body["error"]["request_id"] == response.headers["X-Request-Id"]
        assert "Traceback" not in await response.text()
        token = headers.get("Authorization", "").partition(" ")[2]
        if len(token) > 8:
            assert token not in await response.text()
    # Nothing was created by the refused POST.
    assert (await api.get("/payments", ADMIN))["data"] == []


async def test_expired_token_says_so(api: Api) -> None:
    error = await api.get(
        "/payments",
        {"Authorization": f"Bearer {signed(claims(exp=int(time.time()) - 5))}"},
        status=401,
    )
    assert error["error"]["code"] == "token_expired"


async def test_scheme_is_case_insensitive(api: Api) -> None:
    await api.get("/payments", {"Authorization": f"bearer {signed(claims())}"})


@pytest.mark.parametrize("user_id", [17, "17"])
async def test_platform_access_token_with_user_id(api: Api, user_id: Any) -> None:
    token = signed(claims(sub=None, user_id=user_id, jti="abc123"))
    payment = await api.create({"Authorization": f"Bearer {token}"})
    assert payment["customer_id"] == "17"
    await api.get(f"/payments/{payment['id']}", CUSTOMER)


async def test_role_defaults_to_customer(api: Api) -> None:
    headers = {"Authorization": f"Bearer {signed(claims(sub='17'))}"}
    error = await api.get("/admin/payments", headers, status=403)
    assert error["error"]["type"] == "permission_error"


# -- roles ------------------------------------------------------------------------------------


async def test_customer_is_refused_capture_and_admin(api: Api) -> None:
    payment = await api.paid(capture_method="manual")
    for status, call in (
        (403, api.post(f"/payments/{payment['id']}/capture", {}, CUSTOMER, status=403)),
        (403, api.get("/admin/payments", CUSTOMER, status=403)),
    ):
        error = (await call)["error"]
        assert set(error) == ERROR_KEYS
        assert (error["type"], error["code"]) == ("permission_error", "forbidden")
        assert status == 403
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "authorized"


async def test_service_may_capture_but_not_use_admin(api: Api) -> None:
    payment = await api.paid(capture_method="manual")
    assert (await api.post(f"/payments/{payment['id']}/capture", {}, SERVICE))[
        "status"
    ] == "captured"
    await api.get("/admin/payments", SERVICE, status=403)
    assert (await api.get("/admin/payments", ADMIN))["data"][0]["id"] == payment["id"]


# -- issuer and audience ----------------------------------------------------------------------


@pytest.fixture
async def strict_client(
    aiohttp_client: Callable[..., Any], database_url: str
) -> TestClient[Any, Any]:
    settings = make_settings(database_url, JWT_ISSUER="https://auth.example", JWT_AUDIENCE="paysvc")
    return await aiohttp_client(create_app(build_container(settings)))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("iss", "aud", "status"),
    [
        ("https://auth.example", "paysvc", 200),
        ("https://auth.example", ["other", "paysvc"], 200),
        (None, "paysvc", 401),
        ("https://evil.example", "paysvc", 401),
        ("https://auth.example", None, 401),
        ("https://auth.example", "other", 401),
    ],
)
async def test_issuer_and_audience_checked_when_configured(
    strict_client: TestClient[Any, Any], iss: str | None, aud: Any, status: int
) -> None:
    token = signed(claims(iss=iss, aud=aud))
    response = await strict_client.get("/payments", headers={"Authorization": f"Bearer {token}"})
    assert response.status == status
    if status == 401:
        assert (await response.json())["error"]["type"] == "authentication_error"


async def test_issuer_and_audience_ignored_when_not_configured(api: Api) -> None:
    token = signed(claims(iss="https://anyone.example", aud="whoever"))
    await api.get("/payments", {"Authorization": f"Bearer {token}"})


def test_minted_tokens_carry_configured_issuer_and_audience() -> None:
    tokens = TokenVerifier(JWT_SECRET, "https://auth.example", "paysvc")
    token = tokens.mint("9", Role.SERVICE, dt.timedelta(minutes=5), dt.datetime.now(dt.UTC))
    verified = tokens.verify(token)
    assert (verified.subject, verified.role) == ("9", Role.SERVICE)
    with pytest.raises(AuthenticationFailed):
        TokenVerifier(JWT_SECRET, "https://other.example", "paysvc").verify(token)


# -- public prefixes are not a way around authentication -----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/health/../payments",
        "/health/%2e%2e/payments",
        "/health%2f..%2fpayments",
        "/docs/../admin/payments",
        "/openapi.json/../payments",
        "/webhooks/../payments",
        "/static/swagger/../../payments",
        "/metrics/../payments",
        "//payments",
    ],
)
async def test_dot_segments_behind_public_prefixes_never_reach_a_handler(
    api: Api, path: str
) -> None:
    """Sent raw, so no client normalises the path first."""
    assert api.client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", api.client.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.split()[1] in (b"401", b"404"), raw
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["type"] in ("authentication_error", "not_found")
    assert '"object":"list"' not in raw.decode()
