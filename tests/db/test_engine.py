"""Database.run retries serialization failures and deadlocks, as PostgreSQL reports them
through asyncpg and SQLAlchemy's wrapping, a bounded number of times; nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container
from paysvc.db import engine
from paysvc.db.engine import is_retryable
from paysvc.payments.repository import PaymentRepository
from tests.conftest import BACKEND, Api

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
