"""Every list page is an index range scan, proven on the statements the HTTP handlers run.

Each list is called through the API with a cursor; the page query it sent is captured from the
engine and EXPLAINed on the same database: it must read the list's index with the filter and
the row-value keyset `(created_at, id) < (…)` as the index condition, and never sort. (The
spelled-out `a < c OR (a = c AND id < i)` could not: SQLite scanned and PostgreSQL filtered
every row before the cursor.) PostgreSQL's planner is told to avoid sequential scans, since on
a handful of rows it would rightly prefer one; what is checked is that the index answers the
query without a sort or filter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text

from paysvc.bootstrap import Container
from paysvc.disputes.models import Dispute
from tests.conftest import ADMIN, BACKEND, CUSTOMER, SERVICE, Api


@contextmanager
def captured(container: Container) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    engine = container.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def plan_of(
    container: Container, api: Api, path: str, headers: dict[str, str], table: str
) -> str:
    """The plan of the page query (the one with ORDER BY … LIMIT on `table`) behind `path`."""
    with captured(container) as statements:
        await api.get(path, headers)
    pages = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT")
        and f"FROM {table}" in sql
        and (f"{table}.created_at DESC" in sql or f"{table}.occurred_at DESC" in sql)
        and "LIMIT" in sql
    ]
    assert len(pages) == 1, [sql for sql, _ in statements]
    sql, params = pages[0]
    async with container.db.engine.connect() as connection:
        if container.db.is_sqlite:
            result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(row[-1]) for row in result)
        await connection.execute(text("SET enable_seqscan = off"))
        result = await connection.exec_driver_sql(f"EXPLAIN {sql}", params)
        return "\n".join(str(row[0]) for row in result)


def assert_range_scan(plan: str, index: str, leading: str | None) -> None:
    assert index in plan, plan
    if "QUERY PLAN" in plan or "SEARCH" in plan or "SCAN" in plan:  # SQLite
        assert "TEMP B-TREE" not in plan, plan
        condition = "(created_at,id)<(?,?)" if leading != "occurred" else "(occurred_at,id)<(?,?)"
        assert condition in plan, plan
        assert f"SCAN {index}" not in plan, plan
    else:
        assert "Sort" not in plan and "Seq Scan" not in plan, plan
        assert "Index Cond" in plan and "ROW(" in plan, plan
        assert "Filter" not in plan, plan


async def test_payment_lists_use_their_index_with_the_keyset_as_condition(
    api: Api, container: Container
) -> None:
    payments = [await api.paid(order_id=f"plan-{n}") for n in range(3)]
    cursor = payments[-1]["id"]

    plan = await plan_of(
        container, api, f"/payments?limit=1&starting_after={cursor}", CUSTOMER, "payments"
    )
    assert_range_scan(plan, "ix_payments_customer_created", "customer_id")

    plan = await plan_of(
        container,
        api,
        f"/admin/payments?status=captured&limit=1&starting_after={cursor}",
        ADMIN,
        "payments",
    )
    assert_range_scan(plan, "ix_payments_status_created", "status")

    plan = await plan_of(
        container, api, f"/admin/payments?limit=1&starting_after={cursor}", ADMIN, "payments"
    )
    assert_range_scan(plan, "ix_payments_created", None)


async def test_refund_dispute_and_audit_lists_use_their_index(
    api: Api, container: Container
) -> None:
    payment = await api.paid(order_id="plan-refunds", amount=5000)
    refunds = [
        await api.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, status=201)
        for _ in range(2)
    ]
    plan = await plan_of(
        container,
        api,
        f"/payments/{payment['id']}/refunds?limit=1&starting_after={refunds[-1]['id']}",
        SERVICE,
        "refunds",
    )
    assert_range_scan(plan, "ix_refunds_payment_created", "payment_id")

    now = dt.datetime.now(dt.UTC)

    async def disputes(session: Any) -> None:
        for n in range(2):
            session.add(
                Dispute(
                    id=f"dp_plan{n}",
                    payment_id=payment["id"],
                    gateway_reference=f"dp_gw_plan{n}",
                    amount=100,
                    currency="usd",
                    reason="fraudulent",
                    status="needs_response",
                    created_at=now + dt.timedelta(seconds=n),
                    updated_at=now,
                )
            )

    await container.db.run(disputes)
    plan = await plan_of(
        container,
        api,
        f"/payments/{payment['id']}/disputes?limit=1&starting_after=dp_plan1",
        ADMIN,
        "disputes",
    )
    assert_range_scan(plan, "ix_disputes_payment_created", "payment_id")

    entries = await api.get(f"/admin/audit?resource_id={payment['id']}", ADMIN)
    first = entries["data"][0]
    plan = await plan_of(
        container,
        api,
        f"/admin/audit?resource_id={payment['id']}&limit=1&starting_after={first['id']}",
        ADMIN,
        "audit_entries",
    )
    assert_range_scan(plan, "ix_audit_entries_resource_occurred", "occurred")
    plan = await plan_of(
        container,
        api,
        f"/admin/audit?actor_id=admin-1&limit=1&starting_after={first['id']}",
        ADMIN,
        "audit_entries",
    )
    assert_range_scan(plan, "ix_audit_entries_actor_occurred", "occurred")


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite only: PostgreSQL's autovacuum analyzes")
async def test_sqlite_planner_statistics_are_gathered_and_kept(
    api: Api, container: Container
) -> None:
    await api.paid(order_id="stats")

    async def stats(session: Any) -> set[str]:
        exists = await session.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        )
        if not exists:
            return set()
        return set(
            await session.scalars(text("SELECT idx FROM sqlite_stat1 WHERE tbl = 'payments'"))
        )

    assert await container.db.run(stats, write=False) == set()
    await container.db.optimize()  # what the server runs hourly and at close
    assert "ix_payments_status_created" in await container.db.run(stats, write=False)
    await container.db.optimize()  # then PRAGMA optimize: statistics stay
    assert "ix_payments_status_created" in await container.db.run(stats, write=False)
