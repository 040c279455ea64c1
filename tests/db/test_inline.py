"""SQLite statements run inline on the event loop (paysvc.db.inline): a write that meets another
*process's* write lock waits for it without blocking the loop, gives a 503 with Retry-After when
the busy budget runs out, and every outcome (commit, rollback, errors) is what SQLAlchemy users
see with any driver. The lock holder is a real second process, as a CLI command would be."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container
from paysvc.db import engine, inline
from paysvc.db.inline import InlineConnection
from paysvc.payments.models import Payment
from tests.conftest import BACKEND, CUSTOMER, Api
from tests.support import count, eventually

pytestmark = pytest.mark.skipif(BACKEND == "postgresql", reason="the SQLite driver")

# Takes the write lock (BEGIN IMMEDIATE, with an uncommitted insert), says so, holds it until
# told, then commits or rolls back. A separate process, like `paysvc keys rotate` would be.
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS holder_marks (n INTEGER)")
conn.execute("INSERT INTO holder_marks VALUES (1)")
print("locked", flush=True)
conn.execute(sys.stdin.readline().strip())
print("released", flush=True)
"""


class LockHolder:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def end(self, how: str = "COMMIT") -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{how}\n".encode())
        await self.process.stdin.drain()
        assert await asyncio.wait_for(self.process.stdout.readline(), 60) == b"released\n"
        assert await asyncio.wait_for(self.process.wait(), 60) == 0


@pytest.fixture
async def take_lock(database_url: str) -> AsyncIterator[Callable[[], Awaitable[LockHolder]]]:
    """Starts the other process; returns once it holds the write lock."""
    path = make_url(database_url).database
    assert path
    processes: list[asyncio.subprocess.Process] = []

    async def take() -> LockHolder:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"locked\n"
        return LockHolder(process)

    yield take
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


class Heartbeat:
    """Counts loop turns every 5 ms: it stops counting whenever something blocks the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    async def wait_for(self, more: int) -> None:
        target = self.ticks + more
        async with asyncio.timeout(60):
            while self.ticks < target:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._task.cancel()


async def test_a_write_waits_for_another_process_lock_while_the_loop_keeps_serving(
    api: Api, container: Container, take_lock: Callable[[], Awaitable[LockHolder]]
) -> None:
    before = await api.create(order_id="before")
    holder = await take_lock()
    heartbeat = Heartbeat()
    try:
        create = asyncio.create_task(api.create(order_id="waits"))
        # The loop turns many times while the write waits for the other process's lock...
        await heartbeat.wait_for(40)
        assert not create.done()
        # ...and serves reads meanwhile (WAL: readers never wait for writers).
        got = await api.get(f"/payments/{before['id']}")
        assert got["id"] == before["id"]
        assert not create.done()

        await holder.end("COMMIT")
        created = await asyncio.wait_for(create, 60)
    finally:
        heartbeat.stop()
    assert created["status"] == "pending" and created["order_id"] == "waits"
    assert await api.get(f"/payments/{created['id']}") == created
    assert await count(container, Payment) == 2

    async def marks(session: AsyncSession) -> int:
        return int(await session.scalar(text("SELECT count(*) FROM holder_marks")) or 0)

    assert await container.db.run(marks, write=False) == 1  # the other process's commit


async def test_a_lock_held_past_the_busy_budget_is_a_503_with_retry_after_and_nothing_written(
    api: Api,
    container: Container,
    take_lock: Callable[[], Awaitable[LockHolder]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    holder = await take_lock()
    response = await api.client.post(
        "/payments/intents",
        json={"order_id": "late", "amount": 1999, "currency": "usd"},
        headers=CUSTOMER,
    )
    body = await response.json()
    assert response.status == 503, body
    assert int(response.headers["Retry-After"]) > 0
    assert "Traceback" not in await response.text()
    assert await count(container, Payment) == 0

    await holder.end("ROLLBACK")
    created = await api.create(order_id="late")  # the same request succeeds once it is free
    assert await count(container, Payment) == 1
    assert created["order_id"] == "late"


async def test_commit_rollback_and_errors_as_sqlalchemy_reports_them(container: Container) -> None:
    db = container.db
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT)"))
        await session.execute(text("INSERT INTO scratch VALUES (1, 'kept')"))

    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO scratch VALUES (2, 'rolled back')"))
            raise RuntimeError("the unit of work fails")

    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO scratch VALUES (3, 'with a duplicate')"))
            await session.execute(text("INSERT INTO scratch VALUES (1, 'duplicate')"))

    with pytest.raises(OperationalError):
        async with db.transaction(write=False) as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    async def values(session: AsyncSession) -> list[tuple[int, str]]:
        result = await session.execute(text("SELECT id, v FROM scratch ORDER BY id"))
        return [(row.id, row.v) for row in result]

    # Only the committed row is there, and the pooled connections are usable after errors.
    assert await db.run(values, write=False) == [(1, "kept")]
    assert await db.run(values) == [(1, "kept")]


async def test_statements_run_on_the_loop_thread(container: Container, api: Api) -> None:
    """No worker thread: the SQL function runs on the thread that runs the loop."""
    await api.create()
    loop_thread = threading.get_ident()
    threads: list[int] = []

    async def work(session: AsyncSession) -> Any:
        raw = await (await session.connection()).get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, InlineConnection)
        await driver.create_function(
            "which_thread", 0, lambda: threads.append(threading.get_ident()) or 0
        )
        await session.execute(text("SELECT which_thread()"))
        return (await session.execute(select(Payment.id))).scalar_one()

    assert await container.db.run(work, write=False)
    assert threads == [loop_thread]


async def test_streaming_reads_a_server_side_cursor_inline(container: Container, api: Api) -> None:
    for n in range(5):
        await api.create(order_id=f"o{n}")
    async with container.db.transaction(write=False) as session:
        result = await session.stream(
            select(Payment.order_id).order_by(Payment.order_id).execution_options(yield_per=2)
        )
        assert [order async for order in result.scalars()] == [f"o{n}" for n in range(5)]


async def _autocheckpoint(session: AsyncSession) -> int:
    return int(await session.scalar(text("PRAGMA wal_autocheckpoint")) or 0)


async def test_the_server_checkpoints_the_wal_in_a_thread(
    api: Api, container: Container, database_url: str
) -> None:
    """A created payment reaches the database file itself (read ignoring the WAL) by the
    server's checkpoint thread, long before the 1000 WAL pages at which a COMMIT would copy
    it; the served connections checkpoint inline only past the backstop."""
    assert await container.db.run(_autocheckpoint, write=False) == engine.SQLITE_BACKSTOP_PAGES
    created = await api.create(order_id="checkpointed")

    def in_database_file() -> bool:
        try:
            file = sqlite3.connect(f"file:{make_url(database_url).database}?immutable=1", uri=True)
            try:
                found = file.execute("SELECT 1 FROM payments WHERE id = ?", (created["id"],))
                return found.fetchone() is not None
            finally:
                file.close()
        except sqlite3.DatabaseError:  # read while being copied: look again
            return False

    async def copied() -> bool:
        return in_database_file()

    await eventually(copied)


async def test_outside_a_server_sqlite_checkpoints_at_commit(container: Container) -> None:
    """A CLI process (no app, no checkpoint thread) keeps SQLite's default."""
    assert await container.db.run(_autocheckpoint, write=False) == 1000


async def test_a_statement_that_holds_the_loop_long_is_logged_without_its_values(
    container: Container, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(inline, "SLOW_STATEMENT_SECONDS", 0.0)  # every statement is "long"

    async def work(session: AsyncSession) -> Any:
        return await session.scalar(
            text("SELECT count(*) FROM payments WHERE order_id = :o"), {"o": "secret-order"}
        )

    with caplog.at_level("WARNING", logger="paysvc.db.inline"):
        assert await container.db.run(work, write=False) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "paysvc.db.inline"]
    assert any("SELECT count(*) FROM payments" in m for m in messages), messages
    assert not any("secret-order" in m for m in messages)
