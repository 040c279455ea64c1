"""Temporary test helper: a fresh database (SQLite file, or PostgreSQL when
PAYSVC_TEST_BACKEND=postgresql and PAYSVC_TEST_DATABASE_URL are set) with every model's tables.

To be replaced by the shared Alembic-migrated fixture from `tests/conftest.py`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

import paysvc.audit.models
import paysvc.gateways.sandbox
import paysvc.payments.models  # noqa: F401  (register every model before creating tables)
from paysvc.db.base import Base
from paysvc.db.engine import Database
from paysvc.keys.keyring import Keyring

BACKEND = os.environ.get("PAYSVC_TEST_BACKEND", "sqlite")


def _create(connection: Connection) -> None:
    dialect = connection.dialect.name
    for table in Base.metadata.sorted_tables:
        connection.execute(CreateTable(table))
        for index in table.indexes:
            where = index.dialect_options[dialect]["where"]
            if isinstance(where, str):  # a plain-string partial-index predicate (fixed on main)
                columns = ", ".join(c.name for c in index.columns)
                unique = "UNIQUE " if index.unique else ""
                ddl = f"CREATE {unique}INDEX {index.name} ON {table.name} ({columns})"
                connection.execute(text(f"{ddl} WHERE {where}"))
            else:
                connection.execute(CreateIndex(index))


async def _admin(url: str, statement: str) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def fresh_database(tmp_path: Path) -> AsyncIterator[str]:
    """A URL to a fresh database with all tables; dropped afterwards on PostgreSQL."""
    if BACKEND != "postgresql":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        await _schema(url)
        yield url
        return
    base = os.environ["PAYSVC_TEST_DATABASE_URL"]
    name = "paysvc_sec_" + secrets.token_hex(4)
    await _admin(base, f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        await _schema(url)
        yield url
    finally:
        await _admin(base, f'DROP DATABASE "{name}" WITH (FORCE)')


async def _schema(url: str) -> None:
    database = Database(url, Keyring(bytes(32)))
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(_create)
    finally:
        await database.dispose()
