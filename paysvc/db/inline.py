"""A SQLite connection that runs every statement on the event-loop thread, for SQLAlchemy's
aiosqlite dialect (`connect_args={"async_creator_fn": inline.connect}`).

Why: aiosqlite runs each statement in a worker thread, so every statement costs a queue put,
a thread switch and a `call_soon_threadsafe` wake-up of the loop (14 hops per create, 59 per
confirm); that plumbing cost more CPU than SQLite itself. Our statements take tens of
microseconds and, in WAL mode with `synchronous=NORMAL`, COMMIT does not fsync, so running
them inline is cheaper and faster than handing them to a thread.

The one rule that makes this safe: **the loop never blocks on a lock.** The connection's busy
timeout is 0; a statement that meets SQLITE_BUSY fails at once, except where waiting is the
right thing and has no side effect:

- `BEGIN IMMEDIATE` (a write transaction taking the write lock up front; see engine.py) and
  any statement run outside a transaction (the PRAGMAs at connect) are retried with
  `await asyncio.sleep` back-off, the loop serving everything else meanwhile, for up to the
  busy budget (`engine.SQLITE_BUSY_TIMEOUT_MS`), then fail with "database is locked" (a
  retryable error for `Database.run`, then a 503 with Retry-After). Writers of this process
  are already queued by `Database`'s asyncio.Lock, so only another process (a CLI command, a
  second server) ever makes a writer wait here.
- Inside a transaction nothing is retried: in WAL mode readers never wait for writers, and
  a write transaction holds the lock from BEGIN IMMEDIATE on; a rare SQLITE_BUSY there is
  raised, and `Database.run` retries the whole unit of work (`is_retryable`).

Long reads would block the loop for their duration, so the server has none: every read it
serves is bounded by an index and a page size (lists use keyset pages on
`(…, created_at, id)` indexes; the admin report reads the per-day rollup). Anything that scans
(audit verify and export, reconcile, key rotation) runs in the CLI, in its own process.
Statements that take longer than `SLOW_STATEMENT_SECONDS` are logged, so a regression shows.

WAL checkpoints would also run inline, at the COMMIT that passes 1000 WAL pages: copying them
and fsyncing the database measured 10 ms median, up to 30 ms, on the 2-core test machine (a
commit: 0.05 ms), a stall of every request. A server therefore checkpoints in a thread
(`Database.start_checkpoints`); see engine.py.

The object mimics exactly what SQLAlchemy's aiosqlite adapter uses of an aiosqlite
Connection/Cursor; its coroutines return without ever suspending except in the busy wait,
so SQLAlchemy's `await_` completes them without a trip through the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

SLOW_STATEMENT_SECONDS = 0.05
# Back-off while another process holds the write lock (SQLite's own busy handler's steps, ms).
_BACKOFF_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)


def busy_budget_seconds() -> float:
    from paysvc.db import engine  # read at call time: tests shorten it

    return engine.SQLITE_BUSY_TIMEOUT_MS / 1000


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(error)


class InlineCursor:
    """aiosqlite.Cursor's API over a sqlite3 cursor, run inline."""

    __slots__ = ("_connection", "_cursor", "_sql", "_started")

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._cursor = connection._conn.cursor()
        self._sql = ""
        self._started = 0.0

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        cursor = self._cursor
        self._sql, self._started = sql, time.perf_counter()
        if await self._connection._run(sql, lambda: cursor.execute(sql, parameters)):
            self._started = time.perf_counter()  # waited for a lock, the loop serving others
        if cursor.description is None:  # else its rows are read next: timed in fetchall
            self._timed()
        return self

    def _timed(self) -> None:
        """Say so when a statement held the loop long: the server must have no long reads."""
        elapsed = time.perf_counter() - self._started
        if elapsed > SLOW_STATEMENT_SECONDS:
            log.warning(
                "a SQLite statement held the event loop for %.0f ms: %.80s",
                elapsed * 1000,
                self._sql,
            )

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        cursor = self._cursor
        rows = list(parameters)  # an iterator could not be replayed by the busy wait
        await self._connection._run(sql, lambda: cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        rows = self._cursor.fetchall()
        self._timed()
        return rows

    async def setinputsizes(self, *_: Any) -> None:
        return None

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> InlineCursor:
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class InlineConnection:
    """aiosqlite.Connection's API (the part SQLAlchemy's adapter uses) over one sqlite3
    connection in autocommit mode (`isolation_level=None`: engine.py emits BEGIN itself)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # the adapter tests it for "open"

    # -- statements ------------------------------------------------------------------------

    async def _run(self, sql: str, call: Callable[[], object]) -> bool:
        """Run `call` now; True if it had to wait for a lock first."""
        try:
            call()
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or not self._may_wait(sql):
                raise
            await self._wait_for_lock(sql, call, error)
            return True
        return False

    def _may_wait(self, sql: str) -> bool:
        """Retrying is side-effect free for BEGIN IMMEDIATE and outside a transaction."""
        return not self._conn.in_transaction or sql.startswith("BEGIN")

    async def _wait_for_lock(
        self, sql: str, call: Callable[[], object], error: sqlite3.OperationalError
    ) -> None:
        log.debug("waiting for a lock: %.40s", sql)
        deadline = time.monotonic() + busy_budget_seconds()
        steps = _backoff()
        while True:
            pause = min(next(steps), max(0.0, deadline - time.monotonic()))
            if pause <= 0:
                raise error
            await asyncio.sleep(pause)
            try:
                call()
                return
            except sqlite3.OperationalError as again:
                if not _is_busy(again) or not self._may_wait(sql):
                    raise
                error = again

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        cursor = self.cursor()
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    # -- state -----------------------------------------------------------------------------

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close now (SQLAlchemy's terminate); closing twice is harmless."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def _backoff() -> Iterator[float]:
    for step in _BACKOFF_MS:
        yield step / 1000
    while True:
        yield _BACKOFF_MS[-1] / 1000


async def connect(database: str, **kwargs: Any) -> InlineConnection:
    """Open `database` for inline use: autocommit (we emit BEGIN), no busy handler (waits are
    asynchronous, above), usable from whichever thread runs the loop."""
    kwargs.pop("timeout", None)
    kwargs.pop("isolation_level", None)
    kwargs.pop("check_same_thread", None)
    conn = sqlite3.connect(
        database, timeout=0, isolation_level=None, check_same_thread=False, **kwargs
    )
    return InlineConnection(conn)
