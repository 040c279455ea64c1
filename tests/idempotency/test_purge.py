"""`paysvc idempotency purge`: keys are kept at least 24 h, older ones removed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from cli.main import app
from paysvc.audit.models import AuditEntry
from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container
from paysvc.idempotency.models import IdempotencyKey
from paysvc.idempotency.service import hash_key
from tests.conftest import CUSTOMER, ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET
from tests.support import rows

INTENT = {"order_id": "1042", "amount": 1999, "currency": "usd"}


async def paysvc(database_url: str, *args: str) -> Any:
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
    }
    # The CLI runs its own event loop, so it runs in a thread beside the test's loop.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def make_keys(client: TestClient[Any, Any], container: Container, ages_h: list[int]) -> None:
    for n, age in enumerate(ages_h):
        key = f"k{n}-{age}h"
        response = await client.post(
            "/payments/intents", json=INTENT, headers={**CUSTOMER, "Idempotency-Key": key}
        )
        assert response.status == 201

        async def backdate(session: AsyncSession, key: str = key, age: int = age) -> None:
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.key == hash_key(container.keyring, key))
                .values(created_at=container.clock.now() - dt.timedelta(hours=age))
            )

        await container.db.run(backdate)


async def test_purge_removes_keys_older_than_24h_by_default(
    client: TestClient[Any, Any], container: Container, database_url: str
) -> None:
    await make_keys(client, container, [0, 23, 25, 24 * 8])
    result = await paysvc(database_url, "idempotency", "purge", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"purged": 2, "older_than": "24h"}
    kept = sorted(r.key for r in await rows(container, IdempotencyKey))
    assert kept == sorted(hash_key(container.keyring, k) for k in ("k0-0h", "k1-23h"))
    purges = [e for e in await rows(container, AuditEntry) if e.action == "idempotency.purge"]
    assert len(purges) == 1
    assert purges[0].actor_id.startswith("operator") and purges[0].origin.startswith("cli")
    assert json.loads(purges[0].details)["removed"] == 2

    result = await paysvc(database_url, "idempotency", "purge", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert "purged 0" in result.stdout


async def test_purge_refuses_to_cut_below_24h_and_bad_durations(
    client: TestClient[Any, Any], container: Container, database_url: str
) -> None:
    await make_keys(client, container, [2])
    result = await paysvc(database_url, "idempotency", "purge", "--older-than", "1h")
    assert result.exit_code == 2  # a usage error, like a malformed value (and --since)
    assert "--older-than" in result.stderr and "at least 24h" in result.stderr
    result = await paysvc(database_url, "idempotency", "purge", "--older-than", "soon")
    assert result.exit_code == 2
    assert len(await rows(container, IdempotencyKey)) == 1


async def test_a_purged_key_can_be_used_again(
    client: TestClient[Any, Any], container: Container, database_url: str
) -> None:
    await make_keys(client, container, [48])
    await container.idempotency.purge(SYSTEM)
    response = await client.post(
        "/payments/intents",
        json={**INTENT, "amount": 5},
        headers={**CUSTOMER, "Idempotency-Key": "k0-48h"},
    )
    assert response.status == 201
    assert "Idempotent-Replayed" not in response.headers
