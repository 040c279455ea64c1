"""Append-only rows inserted beside the ORM's unit of work.

Every change writes rows that are never updated in the transaction that writes them: the
payment's history, the outgoing event and its deliveries, the audit entry. Through the ORM each
one cost about 0.3 ms of CPU (identity map, unit-of-work sort, one INSERT per object); here a
row is turned into its column values when it is staged (encrypted fields sealed with the
session's keyring) and the staged rows are inserted together — one `executemany` per table —
in the same transaction:

- before any statement the session executes (so a query in the same unit of work sees them),
- and before the commit,

each time after the ORM has flushed its own pending objects (a staged row may refer to one,
e.g. the payment just created). On SQLite the insert runs on the connection's sqlite3 handle
inline (paysvc.db.inline), on PostgreSQL as one Core `executemany`. If the unit of work rolls
back, its staged rows go with it.

Only for rows the ORM never touches again in the same unit of work: a staged object is
transient (it belongs to no session), and changing it after `stage` changes nothing stored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, event, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from paysvc.db.encrypted import EncryptedModel, seal_all
from paysvc.db.inline import InlineConnection

_STAGED = "paysvc_staged_rows"


@dataclass(frozen=True, slots=True)
class _Shape:
    """How one model's rows are inserted: its columns (an autoincrement key left to the
    database), their scalar defaults, the SQLite statement and bind processors."""

    table: Table
    columns: tuple[Column[Any], ...]
    keys: tuple[str, ...]
    defaults: tuple[Any, ...]


_SHAPES: dict[type, _Shape] = {}
_SQLITE: dict[Table, tuple[str, list[Any]]] = {}  # one SQLite dialect in this app


def _shape(model: type) -> _Shape:
    shape = _SHAPES.get(model)
    if shape is None:
        table: Table = model.__table__  # type: ignore[attr-defined]
        columns = tuple(c for c in table.c if c is not table.autoincrement_column)
        defaults = []
        for column in columns:
            default = column.default
            if default is not None and not default.is_scalar:
                raise TypeError(f"{table.name}.{column.name}: only scalar defaults are staged")
            defaults.append(None if default is None else default.arg)  # type: ignore[attr-defined]
        shape = _Shape(table, columns, tuple(c.key for c in columns), tuple(defaults))
        _SHAPES[model] = shape
    return shape


def stage(session: AsyncSession | Session, row: Any) -> None:
    """Insert `row` (a new model instance) in the session's unit of work, beside the ORM."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if isinstance(row, EncryptedModel):
        seal_all(row, sync)
    shape = _shape(type(row))
    values = []
    for key, default in zip(shape.keys, shape.defaults, strict=True):
        value = getattr(row, key)
        values.append(default if value is None else value)
    sync.info.setdefault(_STAGED, []).append((shape, values))


def write_staged(session: Session) -> None:
    """Flush the ORM's pending objects, then insert the staged rows in staging order (rows of
    one table staged one after another go in one `executemany`)."""
    staged: list[tuple[_Shape, list[Any]]] | None = session.info.pop(_STAGED, None)
    if not staged:
        return
    session.flush()
    connection = session.connection()
    batch: list[list[Any]] = []
    for n, (shape, values) in enumerate(staged):
        batch.append(values)
        if n + 1 == len(staged) or staged[n + 1][0] is not shape:
            _insert(connection, shape, batch)
            batch = []


def _insert(connection: Connection, shape: _Shape, rows: list[list[Any]]) -> None:
    dialect = connection.dialect
    if dialect.name != "sqlite":
        connection.execute(
            insert(shape.table), [dict(zip(shape.keys, r, strict=True)) for r in rows]
        )
        return
    sql, processors = _sqlite_statement(dialect, shape)
    parameters = [
        [
            value if p is None or value is None else p(value)
            for p, value in zip(processors, r, strict=True)
        ]
        for r in rows
    ]
    driver = connection.connection.driver_connection
    assert isinstance(driver, InlineConnection)
    try:
        driver._conn.executemany(sql, parameters)  # inline, inside the open transaction
    except sqlite3.Error as error:  # as SQLAlchemy raises it (IntegrityError, OperationalError…)
        # without the values: an error's text may reach a log
        raise DBAPIError.instance(
            sql, parameters, error, sqlite3.Error, hide_parameters=True, ismulti=True
        ) from error


def _sqlite_statement(dialect: Dialect, shape: _Shape) -> tuple[str, list[Any]]:
    found = _SQLITE.get(shape.table)
    if found is None:
        compiled = insert(shape.table).compile(dialect=dialect, column_keys=list(shape.keys))
        if compiled.positiontup != [c.key for c in shape.columns]:
            raise AssertionError(f"{shape.table.name}: unexpected parameter order")
        found = (str(compiled), [c.type._cached_bind_processor(dialect) for c in shape.columns])
        _SQLITE[shape.table] = found
    return found


@event.listens_for(Session, "do_orm_execute")
def _before_statement(state: ORMExecuteState) -> None:
    if _STAGED in state.session.info:
        write_staged(state.session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_staged(session)


@event.listens_for(Session, "after_rollback")
def _drop_staged(session: Session) -> None:
    session.info.pop(_STAGED, None)
