"""Temporary test helper: a fresh SQLite database with every model's tables.

To be replaced by the shared Alembic-migrated fixture from `tests/conftest.py`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.schema import CreateIndex, CreateTable

import paysvc.audit.models
import paysvc.gateways.sandbox
import paysvc.payments.models  # noqa: F401  (register every model before creating tables)
from paysvc.db.base import Base
from paysvc.db.engine import Database
from paysvc.keys.keyring import Keyring


def _create(connection: Connection) -> None:
    for table in Base.metadata.sorted_tables:
        connection.execute(CreateTable(table))
        for index in table.indexes:
            where = index.dialect_options["sqlite"]["where"]
            if isinstance(where, str):  # a plain-string partial-index predicate (fixed on main)
                columns = ", ".join(c.name for c in index.columns)
                unique = "UNIQUE " if index.unique else ""
                ddl = f"CREATE {unique}INDEX {index.name} ON {table.name} ({columns})"
                connection.execute(text(f"{ddl} WHERE {where}"))
            else:
                connection.execute(CreateIndex(index))


async def sqlite_database(path: Path, keyring: Keyring) -> Database:
    database = Database(f"sqlite:///{path}", keyring)
    async with database.engine.begin() as connection:
        await connection.run_sync(_create)
    return database
