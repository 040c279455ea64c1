"""Engine and unit-of-work factory; the SQLite write-lock discipline; bounded retries.

SQLite ignores `SELECT ... FOR UPDATE`, so a write transaction takes the write lock up front
(`BEGIN IMMEDIATE`, waiting for another process's lock asynchronously for up to
SQLITE_BUSY_TIMEOUT_MS) and lost updates cannot happen. Read-only units of work use a plain
`BEGIN` so readers never wait for writers (WAL mode). SQLite statements run inline on the
event loop's thread (see paysvc.db.inline for why, and why the loop never blocks on a lock).
PostgreSQL uses READ COMMITTED plus row locks taken by repositories; serialization failures and
deadlocks are retried a bounded number of times.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from paysvc.db import inline
from paysvc.db.encrypted import EncryptedModel
from paysvc.db.reads import KeyedReader
from paysvc.keys import repository as keys_repository
from paysvc.keys.keyring import Keyring

T = TypeVar("T")
M = TypeVar("M", bound=EncryptedModel)
log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
_RETRYABLE_PG = {"40001", "40P01"}  # serialization_failure, deadlock_detected
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_ANALYSIS_LIMIT = 1000  # rows sampled per index by ANALYZE (approximate, fast)
SQLITE_OPTIMIZE_INTERVAL = 3600.0  # seconds between PRAGMA optimize in a running server
SQLITE_CHECKPOINT_INTERVAL = 1.0  # seconds between a server's WAL checkpoints (in a thread)
# A server's connections still checkpoint inline past this many WAL pages (~80 MB at 4 KiB),
# should its checkpoint thread ever fall that far behind: the WAL never grows without bound.
SQLITE_BACKSTOP_PAGES = 20_000
SQLITE_POOL_SIZE = 64  # connections kept open (opened lazily: an idle server holds one)
SQLITE_POOL_OVERFLOW = 64


def async_url(url: str) -> str:
    """Pick the async driver for a plain URL: sqlite+aiosqlite, postgresql+asyncpg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}")


def create_engine(url: str) -> AsyncEngine:
    """An engine whose errors never carry the statement's values (they may reach a log)."""
    engine_url = async_url(url)
    if engine_url.startswith("sqlite"):
        # Statements run on the loop's thread (paysvc.db.inline), not in aiosqlite's threads.
        engine = create_async_engine(
            engine_url,
            connect_args={"async_creator_fn": inline.connect},
            # Every request holds a connection for its unit of work; past the pool's size
            # each one was opened (schema parsed, pragmas set) and closed per request.
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_OVERFLOW,
            hide_parameters=True,
        )
        _sqlite_discipline(engine)
        return engine
    return create_async_engine(
        engine_url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )


def _sqlite_discipline(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # inline.connect opened it in autocommit mode (we emit BEGIN ourselves) with no busy
        # handler: a lock is waited for asynchronously, never by blocking the loop.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get("paysvc_write", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _checkpoint_every(path: str, interval: float, stop: threading.Event) -> None:
    """The checkpoint thread: its own connection, a PASSIVE checkpoint every `interval`."""
    connection: sqlite3.Connection | None = None
    failing = False
    try:
        while not stop.wait(interval):
            try:
                if connection is None:
                    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
                busy, frames, copied = connection.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
            except sqlite3.Error as error:  # the database is away: say so once, keep trying
                if not failing:
                    log.warning("WAL checkpoint failed: %s", error)
                failing = True
                continue
            failing = False
            if busy or copied < frames:  # readers on older pages: the rest next time
                log.debug("WAL checkpoint copied %d of %d frames", copied, frames)
    finally:
        if connection is not None:
            connection.close()


async def _nothing() -> None:
    return None


def _sqlstate(error: DBAPIError) -> str | None:
    """PostgreSQL's error code, on asyncpg's adapted error or on the asyncpg error behind it."""
    code = getattr(error.orig, "sqlstate", None) or getattr(
        getattr(error.orig, "__cause__", None), "sqlstate", None
    )
    return code if isinstance(code, str) else None


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, DBAPIError):
        if _sqlstate(error) in _RETRYABLE_PG:
            return True
        if isinstance(error, OperationalError) and "database is locked" in str(error.orig):
            return True
    return False


# A PostgreSQL server that is up but takes no connection now: too_many_connections (53300:
# max_connections, or a role's or database's CONNECTION LIMIT) and cannot_connect_now (57P03:
# starting up, shutting down, in recovery). asyncpg's errors for them reach SQLAlchemy as a
# plain DBAPIError, with the SQLSTATE on `orig`.
UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P03"})


def database_unreachable(error: BaseException) -> bool:
    """The database could not be reached (refused, dropped, timed out, full, or busy past
    every retry): a 503 with Retry-After, not a 500. Nothing was committed."""
    if isinstance(error, DBAPIError):
        return (
            error.connection_invalidated
            or isinstance(error, OperationalError | InterfaceError)
            or _sqlstate(error) in UNAVAILABLE_SQLSTATES
        )
    return isinstance(error, OSError)  # asyncpg raises ConnectionRefusedError etc. unwrapped


class Database:
    """Owns the engine; hands out units of work (one transaction each)."""

    def __init__(self, url: str, keyring: Keyring) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.keyring = keyring
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, info={"keyring": keyring}
        )
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._active_key_recorded = False  # see paysvc.keys.models.KeyInUse
        self._checkpointing = False  # see checkpoints()
        self._readers: list[KeyedReader[Any]] = []
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", self._on_sqlite_connect)

    def _on_sqlite_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if self._checkpointing:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_BACKSTOP_PAGES}")
            cursor.close()

    async def start_checkpoints(
        self, interval: float = SQLITE_CHECKPOINT_INTERVAL
    ) -> Callable[[], Awaitable[None]]:
        """SQLite, for a server: WAL checkpoints off the event loop; returns the function that
        stops them. SQLite checkpoints at the COMMIT that passes 1000 WAL pages, copying them
        into the database and fsyncing it; with statements run inline that stalled every
        request behind it. From here on the connections only do so past
        SQLITE_BACKSTOP_PAGES, and a thread runs a PASSIVE checkpoint every `interval` seconds
        (never waiting for a lock; what it cannot copy now it copies next time). CLI
        processes keep SQLite's default. (A plain start/stop pair rather than a context
        manager: the app's cleanup context is itself an async generator, and a nested one
        could not be closed when the server fails to start.)"""
        if not self.is_sqlite:
            return _nothing
        self._checkpointing = True
        await self.engine.dispose()  # pooled connections reopen with the backstop setting
        stop = threading.Event()
        thread = threading.Thread(
            target=_checkpoint_every,
            args=(make_url(self.url).database or "", interval, stop),
            name="paysvc-wal-checkpoint",
            daemon=True,
        )
        thread.start()

        async def stop_checkpoints() -> None:
            self._checkpointing = False
            stop.set()
            await asyncio.to_thread(thread.join)  # its checkpoint in progress ends first

        return stop_checkpoints

    def reader(self, model: type[M]) -> KeyedReader[M]:
        """A by-key reader of `model` outside any unit of work (see paysvc.db.reads)."""
        reader = KeyedReader(model, self.engine, self.keyring)
        self._readers.append(reader)
        return reader

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block succeeds, rolled back when it raises."""
        queued = write and self.is_sqlite and await self._enter_sqlite_writer()
        try:
            async with self._unit_of_work(write) as session:
                yield session
        finally:
            if queued:
                self._sqlite_writer().release()

    async def _enter_sqlite_writer(self) -> bool:
        """SQLite has one writer at a time: queue this process's writers in order here rather
        than have them poll the file lock with the busy handler's growing sleeps (that made
        tail latency under load seconds long). Another process's lock is waited for by
        `BEGIN IMMEDIATE` itself (asynchronously, paysvc.db.inline), within the busy timeout.
        If the queue does not move within the busy timeout, go on without it (SQLite's own
        locking still holds), so this can only ever help."""
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await self._sqlite_writer().acquire()
        except TimeoutError:
            log.warning("SQLite writer queue did not move in time; using the file lock alone")
            return False
        return True

    def _sqlite_writer(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0] is not loop:
            self._writer = (loop, asyncio.Lock())
        return self._writer[1]

    @asynccontextmanager
    async def _unit_of_work(self, write: bool) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            await session.connection(execution_options={"paysvc_write": write})
            try:
                yield session
                if write:
                    # The first commit after this process encrypted or MACed anything under its
                    # active key records that key as in use, in the same transaction.
                    recording = self.keyring.used_active and not self._active_key_recorded
                    if recording:
                        await keys_repository.record_in_use(
                            session, self.keyring.active_id, dt.datetime.now(dt.UTC)
                        )
                    await session.commit()
                    self._active_key_recorded = self._active_key_recorded or recording
                # A read-only unit of work ends when the session closes (no expiry of results).
            except BaseException:
                await session.rollback()
                raise

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]], *, write: bool = True) -> T:
        """Run `work` in one unit of work, retrying serialization failures and deadlocks."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.transaction(write=write) as session:
                    return await work(session)
            except DBAPIError as error:
                if attempt == MAX_ATTEMPTS or not is_retryable(error):
                    raise
                log.info(
                    "retrying unit of work after %s (attempt %d)", type(error).__name__, attempt
                )
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def optimize(self) -> None:
        """SQLite: give the query planner statistics (`ANALYZE` the first time, then `PRAGMA
        optimize`, which re-analyzes only what changed a lot), each bounded by
        `analysis_limit` so it takes milliseconds at any size. PostgreSQL's autovacuum does it."""
        if not self.is_sqlite:
            return
        async with self.engine.begin() as connection:
            await connection.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
            analyzed = await connection.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
            )
            await connection.exec_driver_sql("PRAGMA optimize" if analyzed.first() else "ANALYZE")

    async def dispose(self) -> None:
        for reader in self._readers:
            await reader.close()
        if self.is_sqlite:
            try:
                await self.optimize()
            except DBAPIError as error:  # never block a shutdown on statistics
                log.warning("PRAGMA optimize at close failed: %s", type(error).__name__)
        await self.engine.dispose()
