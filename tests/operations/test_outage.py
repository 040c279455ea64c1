"""The database goes away under the service and comes back: 503 with Retry-After meanwhile, keys
of the failed requests released, and every operation that was in flight completed afterwards,
never repeated. The outage is real: every connection in the pool is dropped and new ones are
refused by the driver (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from paysvc.db.engine import Database
from paysvc.web.app import create_app
from tests.conftest import CUSTOMER, SERVICE, Api, make_settings
from tests.faults import FaultyGateway, faulty_container
from tests.operations.test_ledger_cases import charges, gateway_refunded
from tests.support import ManualClock


class Outage:
    """Cuts the service off its database and restores it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.down = False
        event.listen(db.engine.sync_engine, "do_connect", self._connect)

    def _connect(self, dialect: Any, *_: Any) -> None:
        if self.down:
            raise dialect.loaded_dbapi.OperationalError("connection refused (database down)")

    async def cut(self) -> None:
        self.down = True
        await self.db.engine.dispose()  # every pooled connection is gone

    def restore(self) -> None:
        self.down = False


@pytest.fixture
async def outage_env(
    database_url: str, aiohttp_client: Any
) -> AsyncIterator[tuple[Api, FaultyGateway, Outage, Any]]:
    clock = ManualClock()
    container, faulty = faulty_container(make_settings(database_url), clock)
    outage = Outage(container.db)
    api = Api(await aiohttp_client(create_app(container)))
    yield api, faulty, outage, container
    outage.restore()


async def test_requests_during_an_outage_get_503_and_recover_without_repeating(
    outage_env: tuple[Api, FaultyGateway, Outage, Any],
) -> None:
    api, faulty, outage, container = outage_env
    payment = await api.create(payment_method="pm_card_visa")
    paid = await api.paid(order_id="other")

    # The database goes down right after the gateway charged, before the answer is recorded.
    faulty.after("charge", outage.cut)
    confirm = await api.client.post(
        f"/payments/{payment['id']}/confirm",
        json={},
        headers={**CUSTOMER, "Idempotency-Key": "confirm-once"},
    )
    assert confirm.status == 503
    assert confirm.headers["Retry-After"] == "5"
    body = await confirm.json()
    assert (body["error"]["type"], body["error"]["code"]) == ("api_error", "service_unavailable")
    for path in (f"/payments/{payment['id']}", "/payments"):
        down = await api.client.get(path, headers=CUSTOMER)
        assert (down.status, down.headers["Retry-After"]) == (503, "5")
    refund = await api.client.post(
        f"/payments/{paid['id']}/refunds", json={"amount": 300}, headers=SERVICE
    )
    assert refund.status == 503
    intent = await api.client.post(
        "/payments/intents",
        json={"order_id": "9", "amount": 500, "currency": "usd"},
        headers={**CUSTOMER, "Idempotency-Key": "new-intent"},
    )
    assert intent.status == 503

    outage.restore()
    # The key whose request failed is usable at once: it re-attaches to its charge.
    retried = await api.client.post(
        f"/payments/{payment['id']}/confirm",
        json={},
        headers={**CUSTOMER, "Idempotency-Key": "confirm-once"},
    )
    assert retried.status == 200
    assert (await retried.json())["status"] == "captured"
    assert len(await charges(container, payment["id"])) == 1
    assert faulty.count("charge") == 2  # the two confirms; no charge was ever sent again
    created = await api.client.post(
        "/payments/intents",
        json={"order_id": "9", "amount": 500, "currency": "usd"},
        headers={**CUSTOMER, "Idempotency-Key": "new-intent"},
    )
    assert created.status == 201  # the key of a request refused during the outage is free
    assert (await api.get(f"/payments/{paid['id']}"))["amount_refunded"] == 0
    assert await gateway_refunded(container, paid["gateway_reference"]) == 0


async def test_an_operation_cut_off_by_an_outage_is_completed_once_the_database_is_back(
    outage_env: tuple[Api, FaultyGateway, Outage, Any],
) -> None:
    api, faulty, outage, container = outage_env
    paid = await api.paid()
    faulty.after("refund", outage.cut)  # refunded at the gateway, then the database goes
    cut_off = await api.client.post(
        f"/payments/{paid['id']}/refunds", json={"amount": 300}, headers=SERVICE
    )
    assert cut_off.status == 503
    report = None
    with pytest.raises(Exception):  # noqa: B017 - still down: the pass fails, retried later
        report = await container.reconcile.run_once()
    assert report is None

    outage.restore()
    # Nobody recorded that its call ended: the background pass asks once its deadline passed.
    container.clock.advance(container.settings.timing.operation_stale.total_seconds())
    report = await container.reconcile.run_once()
    [item] = report.items
    assert (item.object, item.theirs, item.action) == (
        "refund",
        "succeeded",
        "settled by lookup: succeeded",
    )
    after = await api.get(f"/payments/{paid['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 300)
    assert await gateway_refunded(container, paid["gateway_reference"]) == 300
    assert faulty.count("refund") == 1  # completed by lookup, never sent twice
