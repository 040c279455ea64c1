"""AUTH_MODE=remote: a fake platform auth service on 127.0.0.1 answers /auth/verify."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from paysvc.bootstrap import Container, build_container
from paysvc.web.app import create_app
from tests.conftest import make_settings


class FakeClock:
    def __init__(self) -> None:
        self.current = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)


@dataclass
class FakeAuthService:
    """Knows some tokens; can be told to fail. Records every call."""

    users: dict[str, str] = field(default_factory=dict)  # token -> user_id
    failing: int | None = None  # HTTP status to answer with instead
    body: dict[str, Any] | None = None  # a 200 body to answer with instead
    calls: list[str] = field(default_factory=list)

    async def verify(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        self.calls.append(token)
        if self.failing is not None:
            return web.Response(status=self.failing, text="boom")
        if self.body is not None:
            return web.json_response(self.body)
        if scheme != "Bearer" or token not in self.users:
            return web.json_response({"valid": False}, status=401)
        return web.json_response({"valid": True, "user_id": self.users[token]})


@dataclass
class Remote:
    client: TestClient[Any, Any]
    auth: FakeAuthService
    clock: FakeClock
    container: Container

    def token(self, user_id: str, ttl: int = 3600, **extra: Any) -> str:
        """A JWT only the auth service can judge (signed with a key paysvc does not know)."""
        exp = int(self.clock.now().timestamp()) + ttl
        payload = {"user_id": user_id, "type": "access", "exp": exp, **extra}
        value = jwt.encode(payload, "the-auth-service-own-secret-" + "z" * 40, algorithm="HS256")
        self.auth.users[value] = user_id
        return value

    async def request(self, token: str, method: str = "GET", path: str = "/payments") -> Any:
        response = await self.client.request(
            method,
            path,
            headers={"Authorization": f"Bearer {token}"},
            json={"order_id": "1", "amount": 100, "currency": "usd"} if method == "POST" else None,
        )
        return response.status, await response.json()


async def _remote(
    aiohttp_client: Callable[..., Any], database_url: str, auth_url: str, auth: FakeAuthService
) -> Remote:
    clock = FakeClock()
    settings = make_settings(database_url, AUTH_MODE="remote", AUTH_SERVICE_URL=auth_url)
    container = build_container(settings, clock=clock)
    client = await aiohttp_client(create_app(container))
    return Remote(client, auth, clock, container)


@pytest.fixture
async def remote(
    aiohttp_server: Callable[..., Any], aiohttp_client: Callable[..., Any], database_url: str
) -> Remote:
    auth = FakeAuthService()
    app = web.Application()
    app.router.add_get("/auth/verify", auth.verify)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return await _remote(aiohttp_client, database_url, str(server.make_url("/")), auth)


async def test_numeric_user_id_is_admitted(remote: Remote) -> None:
    remote.auth.body = {"valid": True, "user_id": 17}
    status, payment = await remote.request(remote.token("17"), "POST", "/payments/intents")
    assert status == 201 and payment["customer_id"] == "17"


async def test_valid_token_admits_a_customer(remote: Remote) -> None:
    token = remote.token("17", role="admin")  # a role claim is not trusted in remote mode
    status, payment = await remote.request(token, "POST", "/payments/intents")
    assert status == 201
    assert payment["customer_id"] == "17"
    status, body = await remote.request(token, "GET", "/admin/payments")
    assert status == 403 and body["error"]["type"] == "permission_error"


async def test_invalid_token_is_401(remote: Remote) -> None:
    status, body = await remote.request("not-known-to-the-auth-service")
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert remote.auth.calls == ["not-known-to-the-auth-service"]


@pytest.mark.parametrize(
    "answer",
    [
        {"valid": False, "user_id": "17"},
        {"valid": True},
        {"valid": "yes", "user_id": "1"},
        {"valid": True, "user_id": ""},
        {"valid": True, "user_id": None},
        {"valid": True, "user_id": ["17"]},
        {"valid": True, "user_id": {"id": "17"}},
        {"valid": True, "user_id": True},
    ],
)
async def test_a_200_that_is_not_a_clear_yes_is_401(remote: Remote, answer: dict[str, Any]) -> None:
    remote.auth.body = answer
    status, body = await remote.request(remote.token("17"))
    assert status == 401 and body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("failing", [500, 502, 404])
async def test_auth_service_errors_are_503_never_let_in(remote: Remote, failing: int) -> None:
    token = remote.token("17")
    remote.auth.failing = failing
    status, body = await remote.request(token, "POST", "/payments/intents")
    assert status == 503
    assert body["error"]["code"] == "auth_service_unavailable"
    remote.auth.failing = None
    status, listing = await remote.request(token)
    assert status == 200 and listing["data"] == []  # nothing was created while it was down


async def test_auth_service_down_is_503(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = await _remote(
        aiohttp_client, database_url, f"http://127.0.0.1:{port}", FakeAuthService()
    )
    status, body = await remote.request(remote.token("17"))
    assert status == 503
    assert body["error"]["type"] == "gateway_error"


async def test_result_cached_for_60_seconds(remote: Remote) -> None:
    token = remote.token("17")
    assert (await remote.request(token))[0] == 200
    remote.clock.advance(59)
    assert (await remote.request(token))[0] == 200
    assert len(remote.auth.calls) == 1
    remote.clock.advance(2)
    assert (await remote.request(token))[0] == 200
    assert len(remote.auth.calls) == 2


async def test_cache_never_outlives_the_token(remote: Remote) -> None:
    token = remote.token("17", ttl=10)
    assert (await remote.request(token))[0] == 200
    remote.clock.advance(5)
    assert (await remote.request(token))[0] == 200
    assert len(remote.auth.calls) == 1
    remote.clock.advance(6)  # past exp: ask again; the auth service now refuses it
    remote.auth.users.pop(token)
    assert (await remote.request(token))[0] == 401
    assert len(remote.auth.calls) == 2


async def test_cached_entry_expired_and_service_down_is_503(remote: Remote) -> None:
    token = remote.token("17")
    assert (await remote.request(token))[0] == 200
    remote.clock.advance(61)
    remote.auth.failing = 500
    assert (await remote.request(token))[0] == 503


async def test_refusals_are_not_cached(remote: Remote) -> None:
    token = remote.token("17")
    remote.auth.failing = 500
    assert (await remote.request(token))[0] == 503
    remote.auth.failing = None
    assert (await remote.request(token))[0] == 200
    assert (await remote.request("unknown"))[0] == 401
    assert (await remote.request("unknown"))[0] == 401
    assert remote.auth.calls.count("unknown") == 2


async def test_missing_bearer_never_reaches_the_auth_service(remote: Remote) -> None:
    response = await remote.client.get("/payments")
    assert response.status == 401
    assert remote.auth.calls == []
