"""All SQL for key management: which encrypted values are under which key, and the rows that
still need re-encryption."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from paysvc.db.base import Base
from paysvc.db.encrypted import EncryptedModel
from paysvc.keys.models import KeyHolder, KeyInUse

# An envelope is "v1:<key id>:<base64>"; key ids are 12 hex characters (see keyring.key_id).
ENVELOPE_PREFIX = "v1:"
KEY_ID_LENGTH = 12


def encrypted_models() -> list[type[EncryptedModel]]:
    """Every mapped class with encrypted fields, in table-name order."""
    models = [
        mapper.class_
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, EncryptedModel)
    ]
    return sorted(models, key=lambda model: str(getattr(model, "__tablename__", "")))


def table_name(model: type[EncryptedModel]) -> str:
    return str(getattr(model, "__tablename__", model.__name__))


def _columns(model: type[EncryptedModel]) -> list[InstrumentedAttribute[Any]]:
    return [getattr(model, field.column) for field in model.__encrypted__.values()]


def _primary_key(model: type[EncryptedModel]) -> InstrumentedAttribute[Any]:
    mapper = next(m for m in Base.registry.mappers if m.class_ is model)
    (column,) = mapper.primary_key  # rotation pages by a single-column primary key
    attribute: InstrumentedAttribute[Any] = getattr(
        model, mapper.get_property_by_column(column).key
    )
    return attribute


def _not_under(model: type[EncryptedModel], key_id: str) -> ColumnElement[bool]:
    prefix = f"{ENVELOPE_PREFIX}{key_id}:"
    return or_(
        *(
            and_(column.is_not(None), ~column.startswith(prefix, autoescape=True))
            for column in _columns(model)
        )
    )


async def values_by_key(session: AsyncSession, model: type[EncryptedModel]) -> dict[str, int]:
    """How many non-null encrypted values of `model` are under each key id."""
    counts: dict[str, int] = {}
    for column in _columns(model):
        key_id = func.substr(column, len(ENVELOPE_PREFIX) + 1, KEY_ID_LENGTH)
        stmt = select(key_id, func.count()).where(column.is_not(None)).group_by(key_id)
        for kid, count in (await session.execute(stmt)).tuples():
            counts[str(kid)] = counts.get(str(kid), 0) + int(count)
    return counts


async def count_rows_not_under(
    session: AsyncSession, model: type[EncryptedModel], key_id: str
) -> int:
    stmt = select(func.count()).select_from(model).where(_not_under(model, key_id))
    return int(await session.scalar(stmt) or 0)


async def rows_not_under(
    session: AsyncSession,
    model: type[EncryptedModel],
    key_id: str,
    after: Any,
    limit: int,
) -> list[EncryptedModel]:
    """Rows with at least one value not under `key_id`, by primary key after `after`, locked.

    `FOR UPDATE` on PostgreSQL, so a request changing the same row waits and neither update is
    lost; SQLite already holds the write lock (BEGIN IMMEDIATE) and ignores the clause.
    Loading decrypts every value (and raises DecryptionError for a tampered or moved one).
    """
    primary_key = _primary_key(model)
    stmt = select(model).where(_not_under(model, key_id))
    if after is not None:
        stmt = stmt.where(primary_key > after)
    stmt = stmt.order_by(primary_key).limit(limit).with_for_update()
    return list((await session.scalars(stmt)).all())


async def values_not_under(
    session: AsyncSession,
    model: type[EncryptedModel],
    key_id: str,
    after: Any,
    limit: int,
    *,
    upto: Any = None,
) -> list[tuple[Any, dict[str, str | None]]]:
    """(primary key, {encrypted column: envelope}) of rows with a value not under `key_id`,
    by primary key after `after` (and at most `upto`): plain columns, nothing decrypted or
    locked."""
    primary_key = _primary_key(model)
    columns = _columns(model)
    stmt = select(primary_key, *columns).where(_not_under(model, key_id))
    if after is not None:
        stmt = stmt.where(primary_key > after)
    if upto is not None:
        stmt = stmt.where(primary_key <= upto)
    rows = (await session.execute(stmt.order_by(primary_key).limit(limit))).all()
    return [(row[0], {c.key: row[n + 1] for n, c in enumerate(columns)}) for row in rows]


async def nth_key_not_under(
    session: AsyncSession, model: type[EncryptedModel], key_id: str, offset: int
) -> Any:
    """The primary key of the row at `offset` (0-based, primary-key order) among the rows with
    a value not under `key_id`; None past the last."""
    primary_key = _primary_key(model)
    stmt = select(primary_key).where(_not_under(model, key_id)).order_by(primary_key)
    return await session.scalar(stmt.offset(offset).limit(1))


async def replace_values(
    session: AsyncSession, model: type[EncryptedModel], changes: list[tuple[Any, str, str, str]]
) -> None:
    """Bulk compare-and-set of (primary key, column, old envelope, new envelope): a value
    changed since it was read (a request wrote it, under the active key) is left alone.

    One UPDATE per row, whatever number of its columns change (each column set only if it
    still holds the old envelope): one new row version, not one per value (on PostgreSQL each
    version is also an entry in every index of the table)."""
    if not changes:
        return
    table: Any = getattr(model, "__table__")  # noqa: B009 - typed access to the mapped table
    key = table.c[_primary_key(model).key]
    columns = sorted({column for _, column, _, _ in changes})
    by_row: dict[Any, dict[str, Any]] = {}
    for row_id, column, old, new in changes:
        params = by_row.get(row_id)
        if params is None:
            params = by_row[row_id] = {"b_id": row_id}
            params.update({f"b_old_{c}": None for c in columns})
            params.update({f"b_new_{c}": None for c in columns})
        params[f"b_old_{column}"], params[f"b_new_{column}"] = old, new
    holds_old = [table.c[c] == bindparam(f"b_old_{c}", type_=table.c[c].type) for c in columns]
    stmt = (
        update(table)
        .where(key == bindparam("b_id"), or_(*holds_old))
        .values(
            {
                c: case((same, bindparam(f"b_new_{c}", type_=table.c[c].type)), else_=table.c[c])
                for c, same in zip(columns, holds_old, strict=True)
            }
        )
    )
    await session.execute(stmt, list(by_row.values()))


def primary_key_of(row: EncryptedModel) -> Any:
    return getattr(row, _primary_key(type(row)).key)


# --- the record of key ids in use and of the instances holding keys ----------------------------


def _insert(session: AsyncSession, model: Any) -> Any:
    """INSERT … with ON CONFLICT support on either dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql_insert(model)
    return sqlite_insert(model)


async def record_in_use(session: AsyncSession, key_id: str, now: dt.datetime) -> None:
    stmt = _insert(session, KeyInUse).values(key_id=key_id, since=now)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["key_id"]))


async def keys_in_use(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(KeyInUse.key_id)))


async def forget_keys_in_use(session: AsyncSession, key_ids: set[str]) -> None:
    if key_ids:
        await session.execute(delete(KeyInUse).where(KeyInUse.key_id.in_(sorted(key_ids))))


async def save_holder(session: AsyncSession, holder: KeyHolder) -> None:
    await session.merge(holder)


async def holders(session: AsyncSession, seen_after: dt.datetime) -> list[KeyHolder]:
    stmt = select(KeyHolder).where(KeyHolder.seen_at >= seen_after)
    return list(await session.scalars(stmt.order_by(KeyHolder.instance_id)))


async def remove_holder(session: AsyncSession, instance_id: str) -> None:
    await session.execute(delete(KeyHolder).where(KeyHolder.instance_id == instance_id))
