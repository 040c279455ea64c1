"""Rolling key rotation rehearsal: two instances over one database, restarted one at a time
through the two phases of README "Rotating the encryption key", serve every request without a
500; at each restart the start-up check passes; `keys status` says which instance is safe."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from cli.serve import check_keys
from paysvc.errors import PaysvcError
from paysvc.keys import service as keys
from paysvc.keys.keyring import Keyring
from paysvc.keys.repository import keys_in_use
from paysvc.web.keys import CONTAINER
from tests.conftest import CUSTOMER, ENCRYPTION_KEY, SERVICE
from tests.security.helpers import client_with

KEY1 = ENCRYPTION_KEY
KEY2 = base64.b64encode(bytes(range(100, 132))).decode()
KID1 = Keyring(base64.b64decode(KEY1)).active_id
KID2 = Keyring(base64.b64decode(KEY2)).active_id

OLD = {"ENCRYPTION_KEY": KEY1}
PHASE1 = {"ENCRYPTION_KEY": KEY1, "ENCRYPTION_KEYS_NEXT": KEY2}
PHASE2 = {"ENCRYPTION_KEY": KEY2, "ENCRYPTION_KEYS_RETIRED": KEY1}
NEW_ONLY = {"ENCRYPTION_KEY": KEY2}


class Fleet:
    """Two named instances; `restart` stops one (its app shuts down) and starts it again with
    another configuration, after the same start-up key check `paysvc serve` runs."""

    def __init__(self, aiohttp_client: Callable[..., Any], database_url: str) -> None:
        self.aiohttp_client = aiohttp_client
        self.database_url = database_url
        self.instances: dict[str, TestClient[Any, Any]] = {}
        self.payments: list[str] = []
        self.served = 0

    async def restart(self, name: str, env: dict[str, str]) -> None:
        if name in self.instances:
            await self.instances.pop(name).close()
        client = await client_with(self.aiohttp_client, self.database_url, **env)
        try:
            await check_keys(client.app[CONTAINER])  # raises PaysvcError like `paysvc serve`
        except PaysvcError:
            await client.close()
            raise
        self.instances[name] = client

    async def traffic(self) -> None:
        """Each instance writes a payment with encrypted fields and a refund; then every
        instance reads every payment written so far, by anyone, and lists them."""
        for name, client in self.instances.items():
            n = len(self.payments)
            created = await self.call(
                client,
                "post",
                "/payments/intents",
                {
                    "order_id": f"roll-{n}",
                    "amount": 1000,
                    "currency": "usd",
                    "description": f"written by {name}",
                    "metadata": {"n": str(n)},
                    "receipt_email": f"buyer{n}@example.com",
                },
            )
            await self.call(
                client,
                "post",
                f"/payments/{created['id']}/confirm",
                {"payment_method": "pm_card_visa"},
            )
            await self.call(
                client, "post", f"/payments/{created['id']}/refunds", {"amount": 10}, SERVICE
            )
            self.payments.append(created["id"])
        for client in self.instances.values():
            for payment_id in self.payments:
                payment = await self.call(client, "get", f"/payments/{payment_id}")
                assert payment["description"].startswith("written by ")
                await self.call(client, "get", f"/payments/{payment_id}/refunds", None, SERVICE)
            listed = await self.call(client, "get", "/payments?limit=100")
            assert {p["id"] for p in listed["data"]} == set(self.payments)

    async def call(
        self,
        client: TestClient[Any, Any],
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] = CUSTOMER,
    ) -> Any:
        response = await client.request(method, path, json=body, headers=headers)
        data = await response.json()
        assert response.status < 300, (method, path, response.status, data)
        self.served += 1
        return data

    async def safety(self) -> list[tuple[str, tuple[str, ...]]]:
        """keys status' verdict per live instance: (its active key, what it cannot read)."""
        db = next(iter(self.instances.values())).app[CONTAINER].db
        reports = await keys.rollout(db, dt.datetime.now(dt.UTC))
        assert len(reports) == len(self.instances)  # stopped instances left the record
        return sorted((r.active_key_id, r.cannot_read) for r in reports)

    async def close(self) -> None:
        for client in self.instances.values():
            await client.close()


async def test_two_instances_rolled_through_both_phases_never_fail_a_request(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    fleet = Fleet(aiohttp_client, database_url)
    try:
        await fleet.restart("a", OLD)
        await fleet.restart("b", OLD)
        await fleet.traffic()

        # Phase 1: the new key becomes readable everywhere, one instance at a time.
        for name in ("a", "b"):
            await fleet.restart(name, PHASE1)
            await fleet.traffic()
            assert all(not missing for _key, missing in await fleet.safety())

        # Phase 2: the new key becomes active, one instance at a time; the old one stays
        # readable (retired). The instance not yet restarted reads what the other writes.
        for name in ("a", "b"):
            await fleet.restart(name, PHASE2)
            await fleet.traffic()
            assert all(not missing for _key, missing in await fleet.safety())

        # Rotate the stored data, after which the old key is no longer needed anywhere.
        db = fleet.instances["a"].app[CONTAINER].db
        assert await keys.rotate(db) > 0
        assert await keys.unreadable(db) == set()
        async with db.transaction(write=False) as session:
            assert await keys_in_use(session) == {KID2}
        for name in ("a", "b"):
            await fleet.restart(name, NEW_ONLY)
            await fleet.traffic()
        assert fleet.served > 100
    finally:
        await fleet.close()


async def test_keys_status_flags_an_instance_that_cannot_read_the_new_key(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    """The one-phase roll the README used to describe: one instance makes the new key active
    while the other has never heard of it. keys status says which one is unsafe, and once data
    is written under the new key an instance without it refuses to start."""
    fleet = Fleet(aiohttp_client, database_url)
    try:
        await fleet.restart("a", OLD)
        await fleet.restart("b", OLD)
        await fleet.traffic()
        await fleet.restart("a", PHASE2)
        assert sorted(await fleet.safety()) == sorted([(KID1, (KID2,)), (KID2, ())])

        # Nothing written under the new key yet: an old-configuration start is still allowed.
        await check_keys(fleet.instances["b"].app[CONTAINER])
        await fleet.call(
            fleet.instances["a"],
            "post",
            "/payments/intents",
            {"order_id": "under-new-key", "amount": 500, "currency": "usd", "description": "x"},
        )
        try:
            await fleet.restart("b", OLD)
        except PaysvcError as error:
            assert KID2 in error.message and "wrong key?" in error.message
        else:
            raise AssertionError("an instance that cannot read stored data started")
    finally:
        await fleet.close()
