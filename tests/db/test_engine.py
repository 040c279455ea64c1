"""Database.run retries serialization failures and deadlocks, as PostgreSQL reports them
through asyncpg and SQLAlchemy's wrapping, a bounded number of times; nothing else. A server
that takes no connection now is unreachable (503), not an unexpected error (500)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container, build_container
from paysvc.db import engine
from paysvc.db.engine import database_unreachable, is_retryable
from paysvc.payments.repository import PaymentRepository
from paysvc.web.app import create_app
from tests.conftest import BACKEND, CUSTOMER, Api, _pg_admin, make_settings

postgres_only = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL SQLSTATEs")


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _wrapped(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", None, _Orig(sqlstate))


def test_classifies_sqlstates_and_sqlite_busy() -> None:
    assert is_retryable(_wrapped("40001"))
    assert is_retryable(_wrapped("40P01"))
    assert not is_retryable(_wrapped("23505"))
    assert is_retryable(OperationalError("BEGIN", None, Exception("database is locked")))
    assert not is_retryable(OperationalError("x", None, Exception("no such table")))
    assert not is_retryable(ValueError("40001"))


def test_a_server_that_takes_no_connection_now_is_unreachable() -> None:
    assert database_unreachable(_wrapped("53300"))  # too_many_connections
    assert database_unreachable(_wrapped("57P03"))  # cannot_connect_now (starting, stopping)
    assert not database_unreachable(_wrapped("23505"))
    assert not database_unreachable(_wrapped("40001"))  # retried by Database.run instead


async def test_run_retries_then_succeeds_and_gives_up_after_the_bound(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.asyncio, "sleep", _no_sleep)
    calls = 0

    async def flaky(_session: AsyncSession) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _wrapped("40001")
        return "done"

    assert await container.db.run(flaky) == "done"
    assert calls == 3

    calls = 0

    async def always(_session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        raise _wrapped("40P01")

    with pytest.raises(DBAPIError):
        await container.db.run(always)
    assert calls == engine.MAX_ATTEMPTS

    calls = 0

    async def conflict(_session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        raise IntegrityError("INSERT", None, _Orig("23505"))

    with pytest.raises(IntegrityError):
        await container.db.run(conflict)
    assert calls == 1


async def _no_sleep(_seconds: float) -> None:
    return None


@postgres_only
@pytest.mark.parametrize(("sqlstate", "retryable"), [("40001", True), ("40P01", True)])
async def test_real_asyncpg_errors_are_recognised(
    container: Container, sqlstate: str, retryable: bool
) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            text(f"DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{sqlstate}'; END $$")
        )

    with pytest.raises(DBAPIError) as raised:
        async with container.db.transaction() as session:
            await work(session)
    assert is_retryable(raised.value) is retryable


@postgres_only
async def test_a_real_deadlock_is_retried_and_both_units_of_work_complete(
    api: Api, container: Container
) -> None:
    """Two units of work lock two payments in opposite orders: PostgreSQL kills one with
    40P01 and Database.run runs it again."""
    first, second = (await api.create())["id"], (await api.create(order_id="2"))["id"]
    holding = {first: asyncio.Event(), second: asyncio.Event()}
    attempts: list[str] = []

    def locker(mine: str, theirs: str) -> Callable[[AsyncSession], Awaitable[None]]:
        async def work(session: AsyncSession) -> None:
            attempts.append(mine)
            repo = PaymentRepository(session)
            await repo.get(mine, for_update=True)
            holding[mine].set()
            await holding[theirs].wait()
            await repo.get(theirs, for_update=True)

        return work

    await asyncio.wait_for(
        asyncio.gather(
            container.db.run(locker(first, second)),
            container.db.run(locker(second, first)),
        ),
        timeout=30,
    )
    assert len(attempts) == 3  # one of the two ran twice


sqlite_only = pytest.mark.skipif(BACKEND == "postgresql", reason="SQLite writer queue")


@sqlite_only
async def test_sqlite_writers_queue_in_process_and_never_wait_forever(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    def writer(name: str) -> Callable[[AsyncSession], Awaitable[None]]:
        async def work(session: AsyncSession) -> None:
            order.append(f"{name}+")
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

        return work

    await asyncio.gather(*(container.db.run(writer(str(n))) for n in range(5)))
    # One write transaction at a time, no interleaving.
    assert all(order[i][:-1] == order[i + 1][:-1] for i in range(0, len(order), 2)), order

    # A queue that does not move (say, a writer stuck elsewhere) is bypassed after the busy
    # timeout, falling back to SQLite's own file lock.
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    lock = container.db._sqlite_writer()
    await lock.acquire()
    try:
        assert await container.db.run(lambda s: _one(s)) == 1
    finally:
        lock.release()


async def _one(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT 1")) or 0)


@postgres_only
async def test_a_postgresql_that_takes_no_more_connections_answers_503(
    database_url: str, aiohttp_client: Callable[..., Any]
) -> None:
    """A real 53300 (too_many_connections): the service's role may open no more connections,
    as when the server's max_connections is reached. Requests get 503 with Retry-After, not
    500, and are served again once connections are allowed."""
    role = "paysvc_full_" + secrets.token_hex(4)
    await _pg_admin(
        database_url,
        f'CREATE ROLE "{role}" LOGIN; '
        f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"; '
        f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
    )
    as_role = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    container = build_container(make_settings(as_role))
    api = Api(await aiohttp_client(create_app(container)))
    try:
        payment = await api.create()
        await _pg_admin(database_url, f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        await container.db.engine.dispose()  # the next request needs a new connection
        for path in (f"/payments/{payment['id']}", "/payments"):
            full = await api.client.get(path, headers=CUSTOMER)
            assert (full.status, full.headers["Retry-After"]) == (503, "5")
            error = (await full.json())["error"]
            assert (error["type"], error["code"]) == ("api_error", "service_unavailable")
        refused = await api.client.post(
            "/payments/intents",
            json={"order_id": "7", "amount": 500, "currency": "usd"},
            headers=CUSTOMER,
        )
        assert refused.status == 503

        await _pg_admin(database_url, f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        assert (await api.get(f"/payments/{payment['id']}"))["status"] == "pending"
    finally:
        await api.client.close()
        await _pg_admin(database_url, f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
