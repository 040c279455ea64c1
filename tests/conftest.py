"""Test fixtures: the app is built by bootstrap over a real, Alembic-migrated database.

SQLite (default): one migrated template file per run, copied for each test.
PostgreSQL (PAYSVC_TEST_BACKEND=postgresql, with PAYSVC_TEST_DATABASE_URL): a fresh database
per run, migrated once by Alembic, every table truncated before each test.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import make_url

from paysvc.auth.principal import Role
from paysvc.auth.tokens import TokenVerifier
from paysvc.bootstrap import Container, build_container
from paysvc.clock import Clock
from paysvc.config import Settings
from paysvc.db import migrate
from paysvc.db.models import metadata
from paysvc.web.app import create_app
from tests.support import ManualClock

JWT_SECRET = "test-secret-" + "x" * 40
ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()
EVENTS_SECRET = "whsec_" + base64.b64encode(b"e" * 32).decode()
BACKEND = os.environ.get("PAYSVC_TEST_BACKEND", "sqlite")


def pytest_report_header() -> str:
    return f"paysvc test database backend: {BACKEND}"


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if BACKEND == "postgresql":
        base = os.environ.get("PAYSVC_TEST_DATABASE_URL")
        if not base:
            raise RuntimeError("PAYSVC_TEST_BACKEND=postgresql needs PAYSVC_TEST_DATABASE_URL")
        name = "paysvc_test_" + secrets.token_hex(4)
        admin = make_url(base).set(drivername="postgresql")
        asyncio.run(
            _pg_admin(admin.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"')
        )
        url = admin.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
        asyncio.run(
            _pg_admin(
                admin.render_as_string(hide_password=False), f'DROP DATABASE "{name}" WITH (FORCE)'
            )
        )
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        migrate.upgrade(f"sqlite:///{path}")
        yield str(path)


async def _pg_admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def database_url(_template: str, tmp_path: Path) -> str:
    """A fresh, migrated database for one test."""
    if BACKEND == "postgresql":
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        asyncio.run(_pg_admin(_template, f"TRUNCATE {tables} CASCADE"))
        return _template
    path = tmp_path / "paysvc.db"
    shutil.copyfile(_template, path)
    return f"sqlite:///{path}"


def make_settings(database_url: str, **overrides: str) -> Settings:
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
        "RATE_LIMIT_PER_SECOND": "100000",
        "RATE_LIMIT_BURST": "100000",
        "RECONCILE_INTERVAL": "0",  # tests drive reconciliation themselves
    }
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def clock() -> Clock:
    """The container's clock: real time that a test may move forward (override in a module or
    conftest for another kind of clock)."""
    return ManualClock()


@pytest.fixture
async def container(settings: Settings, clock: Clock) -> AsyncIterator[Container]:
    services = build_container(settings, clock=clock)
    yield services
    await services.close()


@pytest.fixture
async def client(container: Container, aiohttp_client: Callable[..., Any]) -> TestClient[Any, Any]:
    # `container` first: set up before the app and closed after it, so the app's last audit
    # seal on shutdown still finds the engine (else it reopens a pool that nobody disposes).
    return await aiohttp_client(create_app(container, own_container=False))  # type: ignore[no-any-return]


def token(sub: str, role: str = "customer", ttl: dt.timedelta = dt.timedelta(hours=1)) -> str:
    return TokenVerifier(JWT_SECRET).mint(sub, Role(role), ttl, dt.datetime.now(dt.UTC))


def auth(sub: str = "17", role: str = "customer") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, role)}"}


CUSTOMER = auth("17")
OTHER_CUSTOMER = auth("99")
SERVICE = auth("order-service", "service")
ADMIN = auth("admin-1", "admin")


class Api:
    """Small helpers over the HTTP client; every call goes through the real stack."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def create(
        self, headers: dict[str, str] | None = None, status: int = 201, **body: Any
    ) -> dict[str, Any]:
        payload = {"order_id": "1042", "amount": 1999, "currency": "usd", **body}
        response = await self.client.post(
            "/payments/intents", json=payload, headers=headers or CUSTOMER
        )
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        return data

    async def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None, status: int = 200
    ) -> dict[str, Any]:
        response = await self.client.post(path, json=body or {}, headers=headers or CUSTOMER)
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        return data

    async def get(
        self, path: str, headers: dict[str, str] | None = None, status: int = 200
    ) -> dict[str, Any]:
        response = await self.client.get(path, headers=headers or CUSTOMER)
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        return data

    async def paid(
        self, method: str = "pm_card_visa", headers: dict[str, str] | None = None, **body: Any
    ) -> dict[str, Any]:
        """A payment created and confirmed (captured unless capture_method=manual)."""
        payment = await self.create(headers, **body)
        expected = 202 if method == "pm_card_timeout" else 200
        return await self.post(
            f"/payments/{payment['id']}/confirm",
            {"payment_method": method},
            headers,
            status=expected,
        )


@pytest.fixture
def api(client: TestClient[Any, Any]) -> Api:
    return Api(client)
