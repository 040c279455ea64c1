"""By-key reads beside the ORM, for the hottest lookup (`GET /payments/{id}`).

The ORM costs about 0.6 ms of CPU to read one row (a session, a transaction, a compiled-cache
lookup, identity-map bookkeeping, three greenlet switches); SQLite itself about 0.01 ms. A
read that needs none of that — one row by primary key, outside any unit of work, for
rendering — goes through a `KeyedReader` instead:

- on SQLite, one `SELECT` on a connection the reader keeps checked out of the engine's pool
  (outside any transaction), run inline like every SQLite statement of the server
  (paysvc.db.inline). A single statement in autocommit mode reads one WAL snapshot, and a
  reader never waits for a writer. When the engine is disposed (the database went away), the
  connection is dropped and the next read connects again through the engine;
- on PostgreSQL, one Core statement on a pooled connection (no session).

The row becomes a detached instance of the model: each column's own result processor (the one
SQLAlchemy applies), then its encrypted fields opened with the keyring, as the ORM's `load`
event does. The instance belongs to no session: it is for reading, never for changing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, bindparam, event, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paysvc.db import inline
from paysvc.db.encrypted import EncryptedModel
from paysvc.keys.keyring import Keyring

M = TypeVar("M", bound=EncryptedModel)


class KeyedReader(Generic[M]):
    """Reads one `model` row by primary key into a detached instance."""

    def __init__(self, model: type[M], engine: AsyncEngine, keyring: Keyring) -> None:
        table: Table = model.__table__  # type: ignore[attr-defined]
        mapper = inspect(model)
        (key,) = table.primary_key.columns
        self.model = model
        self.engine = engine
        self.keyring = keyring
        self.statement = select(*table.c).where(key == bindparam("key"))
        self.names = [mapper.get_property_by_column(column).key for column in table.c]
        self.manager = mapper.class_manager
        dialect = engine.dialect
        self.sql = str(self.statement.compile(dialect=dialect))
        processors: list[Callable[[Any], Any] | None] = [
            column.type._cached_result_processor(dialect, None) for column in table.c
        ]
        self.processors = processors
        self.is_sqlite = dialect.name == "sqlite"
        self._held: AsyncConnection | None = None  # SQLite: checked out of the engine's pool
        self._connection: inline.InlineConnection | None = None  # ... and its driver connection
        self._stale = False
        event.listen(engine.sync_engine, "engine_disposed", self._on_dispose)

    def _on_dispose(self, _engine: object) -> None:
        self._stale = self._held is not None

    async def get(self, key: str) -> M | None:
        if self.is_sqlite:
            row = await self._sqlite_row(key)
            if row is None:
                return None
            values = [
                value if process is None else process(value)
                for process, value in zip(self.processors, row, strict=True)
            ]
        else:
            async with self.engine.connect() as connection:
                found = (await connection.execute(self.statement, {"key": key})).first()
            if found is None:
                return None
            values = list(found)
        # Built as the ORM's loader builds a loaded instance (values straight into its
        # __dict__), not through the constructor's per-attribute change events.
        instance: M = self.manager.new_instance()
        instance.__dict__.update(zip(self.names, values, strict=True))
        for field in self.model.__encrypted__.values():
            field.open(instance, self.keyring)
        return instance

    async def _sqlite_row(self, key: str) -> Any:
        if self._stale:
            await self.close()
        connection = self._connection
        if connection is None:
            self._held = await self.engine.connect()
            driver = (await self._held.get_raw_connection()).driver_connection
            assert isinstance(driver, inline.InlineConnection)
            self._connection = connection = driver
        try:
            cursor = await connection.execute(self.sql, (key,))
            return await cursor.fetchone()
        except sqlite3.Error as error:  # as SQLAlchemy would raise it: a 503 when unreachable
            await self.close()
            raise DBAPIError.instance(
                self.sql, (key,), error, sqlite3.Error, hide_parameters=True
            ) from error

    async def close(self) -> None:
        """Give the connection up (never back to the pool: it may be the one that failed)."""
        held, self._held, self._connection, self._stale = self._held, None, None, False
        if held is not None:
            await held.invalidate()
            await held.close()
