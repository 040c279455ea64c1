"""The per-day rollup behind /admin/transactions is exact: after every kind of payment change
(through the API, concurrently, by an admin correction, by hand in SQL) it equals a full scan
of the payments; `paysvc admin rebuild-rollup` restores it from the payments."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.admin.repository import GroupRow, TransactionRepository
from paysvc.bootstrap import Container
from tests.admin.conftest import SetClock, put_status
from tests.admin.test_transactions import at, seed
from tests.conftest import ADMIN, SERVICE, Api
from tests.security.helpers import paysvc

WHOLE = {"created_gte": at(1, 0), "created_lt": at(30, 0)}


def ordered(rows: Sequence[GroupRow]) -> list[GroupRow]:
    return sorted(rows, key=lambda r: (r.day or dt.date.min, r.currency, r.status or ""))


async def assert_exact(container: Container) -> list[GroupRow]:
    """Rollup == scan, for every shape of the report; returns the by-day rows."""
    results = []
    for by_day in (False, True):
        for currency in (None, "usd", "eur"):

            async def both(
                session: AsyncSession, by_day: bool = by_day, currency: str | None = currency
            ) -> tuple[list[GroupRow], list[GroupRow]]:
                repo = TransactionRepository(session)
                args = {**WHOLE, "currency": currency, "by_day": by_day}
                return ordered(await repo.groups(**args)), ordered(await repo.scan_groups(**args))

            rollup, scan = await container.db.run(both, write=False)
            assert rollup == scan, (by_day, currency)
            results.append(rollup)
    assert results[3]  # something was counted
    return results[3]


async def test_rollup_equals_a_scan_after_every_kind_of_change(
    api: Api, clock: SetClock, container: Container
) -> None:
    await seed(api, clock)  # captures, refunds, declines, authorizations, cancels, timeouts
    await assert_exact(container)

    # Concurrent changes of payments of the same day and status (the same rollup row).
    clock.at = at(22, 10)
    created = await asyncio.gather(
        *(
            api.create(SERVICE, order_id=f"race-{n}", customer_id="17", amount=100 + n)
            for n in range(8)
        )
    )
    await asyncio.gather(
        *(
            api.post(f"/payments/{p['id']}/confirm", {"payment_method": "pm_card_visa"}, SERVICE)
            for p in created
        )
    )
    await asyncio.gather(
        *(api.post(f"/payments/{p['id']}/refunds", {"amount": 50}, SERVICE, 201) for p in created)
    )
    await assert_exact(container)

    # An admin status correction.
    # (An authorization the bank says was released: a processing payment waits for its operation.)
    held = await api.paid(
        "pm_card_visa", SERVICE, order_id="held", customer_id="17", capture_method="manual"
    )
    await put_status(api, held["id"], "cancelled")
    by_day = await assert_exact(container)
    day = [r for r in by_day if r.day == dt.date(2026, 11, 22) and r.currency == "usd"]
    assert sum(r.count for r in day) == 9 and sum(r.refunded for r in day) == 8 * 50

    # By hand, outside the service (the triggers still see it).
    async def by_hand(session: AsyncSession) -> None:
        await session.execute(
            text("UPDATE payments SET status = 'failed' WHERE order_id = 'race-0'")
        )
        await session.execute(
            text("UPDATE payments SET amount = amount + 1 WHERE order_id = 'race-1'")
        )

    await container.db.run(by_hand)
    await assert_exact(container)


async def test_rebuild_rollup_restores_it(
    api: Api, clock: SetClock, container: Container, database_url: str
) -> None:
    await seed(api, clock)
    before = await api.get("/admin/transactions?from=2026-11-19&to=2026-11-24&group_by=day", ADMIN)

    async def damage(session: AsyncSession) -> None:
        await session.execute(text("DELETE FROM payment_daily_totals WHERE status = 'captured'"))
        await session.execute(text("UPDATE payment_daily_totals SET volume = volume + 999"))

    await container.db.run(damage)
    damaged = await api.get("/admin/transactions?from=2026-11-19&to=2026-11-24&group_by=day", ADMIN)
    assert damaged["totals"] != before["totals"]

    result = await paysvc(database_url, "admin", "rebuild-rollup", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] > 0
    after = await api.get("/admin/transactions?from=2026-11-19&to=2026-11-24&group_by=day", ADMIN)
    assert after == before
    await assert_exact(container)


@pytest.mark.parametrize("by_day", [False, True])
async def test_an_empty_database_has_an_empty_rollup(container: Container, by_day: bool) -> None:
    async def read(session: AsyncSession) -> Sequence[GroupRow]:
        return await TransactionRepository(session).groups(**WHOLE, currency=None, by_day=by_day)

    assert await container.db.run(read, write=False) == []
