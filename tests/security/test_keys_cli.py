"""`paysvc keys generate|status|rotate` on the database the HTTP app serves."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.chain import seal_pending
from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from paysvc.keys.keyring import Keyring
from paysvc.web.keys import CONTAINER as CONTAINER_KEY
from tests.conftest import CUSTOMER, ENCRYPTION_KEY, SERVICE, Api
from tests.security.helpers import client_with, paysvc

KEY1 = ENCRYPTION_KEY  # what the shared `api`/`container` fixtures encrypt with
KEY2 = base64.b64encode(bytes(range(32))).decode()
KID1 = Keyring(base64.b64decode(KEY1)).active_id
KID2 = Keyring(base64.b64decode(KEY2)).active_id
ROTATED = {"ENCRYPTION_KEY": KEY2, "ENCRYPTION_KEYS_RETIRED": KEY1}
KEY2_ALONE = {"ENCRYPTION_KEY": KEY2}


async def write_some(api: Api, count: int, prefix: str = "o") -> list[str]:
    ids = []
    for i in range(count):
        payment = await api.paid(
            order_id=f"{prefix}{i}",
            description=f"description {prefix}{i}",
            metadata={"n": str(i)},
            receipt_email=f"buyer{i}@example.com",
        )
        await api.post(
            f"/payments/{payment['id']}/refunds",
            {"amount": 1, "metadata": {"i": str(i)}},
            SERVICE,
            201,
        )
        ids.append(payment["id"])
    return ids


async def read_all(client: TestClient[Any, Any], ids: list[str]) -> list[dict[str, Any]]:
    seen = []
    for payment_id in ids:
        response = await client.get(f"/payments/{payment_id}", headers=SERVICE)
        assert response.status == 200, await response.text()
        refunds: list[dict[str, Any]] = []
        after = ""
        while True:  # every page: a slow rotation leaves many refunds per payment
            listed = await client.get(
                f"/payments/{payment_id}/refunds?limit=100{after}", headers=SERVICE
            )
            assert listed.status == 200, await listed.text()
            page = await listed.json()
            refunds.extend(page["data"])
            if not page["has_more"]:
                break
            after = f"&starting_after={page['next_cursor']}"
        seen.append({"payment": await response.json(), "refunds": {"data": refunds}})
    return seen


async def status(database_url: str, **env: str) -> dict[str, Any]:
    result = await paysvc(database_url, "keys", "status", "--json", **env)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def by_key(report: dict[str, Any]) -> dict[str, tuple[str, int, int]]:
    return {k["key_id"]: (k["state"], k["values"], k["audit_macs"]) for k in report["keys"]}


async def test_generate_prints_a_fresh_key(database_url: str) -> None:
    first = await paysvc(database_url, "keys", "generate")
    second = await paysvc(database_url, "keys", "generate")
    assert first.exit_code == second.exit_code == 0
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout


async def test_rotate_then_the_new_key_alone_reads_everything(
    api: Api,
    container: Container,
    aiohttp_client: Callable[..., Any],
    database_url: str,
) -> None:
    ids = await write_some(api, 4)
    await seal_pending(container.db, container.keyring)
    before = await read_all(api.client, ids)

    report = await status(database_url, **ROTATED)
    assert report["active_key_id"] == KID2
    keys = by_key(report)
    assert keys[KID2] == ("active", 0, 0)
    state, values, macs = keys[KID1]
    assert state == "retired" and values > 0 and macs > 0
    assert values >= 4 * 3 + 4  # email, description, metadata, token; refund metadata
    assert report["pending"] >= 4 + 4 + macs  # rows and sealed audit entries to rewrite

    rotated = await paysvc(database_url, "keys", "rotate", "--batch-size", "3", **ROTATED)
    assert rotated.exit_code == 0, rotated.output
    assert f"active key {KID2}" in rotated.stdout
    assert f"may be removed from ENCRYPTION_KEYS_RETIRED: {KID1}" in rotated.stdout

    after = await status(database_url, **ROTATED)
    assert after["pending"] == 0
    assert by_key(after)[KID1] == ("retired", 0, 0)

    alone = await client_with(aiohttp_client, database_url, **KEY2_ALONE)
    assert await read_all(alone, ids) == before
    verified = await paysvc(database_url, "audit", "verify", **KEY2_ALONE)
    assert verified.exit_code == 0, verified.output

    async with container.db.transaction(write=False) as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action.like("keys.%")))
        )
    assert entries and all(e.actor_id.startswith("operator:") for e in entries)
    assert all(e.origin.startswith("cli:") and e.resource_id == KID2 for e in entries)
    assert len({e.request_id for e in entries}) == 1  # one command, one request id


async def test_rotation_while_serving_loses_nothing(
    api: Api,
    container: Container,
    aiohttp_client: Callable[..., Any],
    database_url: str,
) -> None:
    ids = await write_some(api, 12)
    await seal_pending(container.db, container.keyring)
    # The instances were restarted with the new key first (the documented procedure).
    serving = await client_with(aiohttp_client, database_url, **ROTATED)
    rotation = asyncio.create_task(
        paysvc(database_url, "keys", "rotate", "--batch-size", "2", **ROTATED)
    )
    created: list[str] = []
    while not rotation.done():
        i = len(created)
        response = await serving.post(
            "/payments/intents",
            json={
                "order_id": f"during{i}",
                "amount": 500 + i,
                "currency": "usd",
                "metadata": {"i": str(i)},
                "receipt_email": f"during{i}@example.com",
            },
            headers=CUSTOMER,
        )
        assert response.status == 201
        created.append((await response.json())["id"])
        # and change rows the rotation is rewriting
        target = ids[i % len(ids)]
        refunded = await serving.post(
            f"/payments/{target}/refunds", json={"amount": 1}, headers=SERVICE
        )
        assert refunded.status == 201, await refunded.text()
    result = await rotation
    assert result.exit_code == 0, result.output
    assert created, "the rotation finished before any request was served"

    await seal_pending(serving.app[CONTAINER_KEY].db, serving.app[CONTAINER_KEY].keyring)
    assert (await status(database_url, **ROTATED))["pending"] == 0
    alone = await client_with(aiohttp_client, database_url, **KEY2_ALONE)
    everything = await read_all(alone, ids + created)
    for i, seen in enumerate(everything[len(ids) :]):
        assert seen["payment"]["metadata"] == {"i": str(i)}
        assert seen["payment"]["amount"] == 500 + i
    total_refunds = sum(len(seen["refunds"]["data"]) for seen in everything[: len(ids)])
    assert total_refunds == len(ids) + len(created)  # one each before, one per loop during
    verified = await paysvc(database_url, "audit", "verify", **KEY2_ALONE)
    assert verified.exit_code == 0, verified.output
