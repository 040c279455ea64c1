"""Cursor pagination shared by every list: newest first, keyset on (created_at, id).

The keyset condition is a row-value comparison, `(created_at, id) < (:c, :i)`, which SQLite
(>= 3.15) and PostgreSQL both answer with a range scan of a `(…, created_at, id)` index; the
spelled-out `created_at < c OR (created_at = c AND id < i)` cannot use the index and made deep
pages of a million rows scan (SQLite) or filter (PostgreSQL) everything before the cursor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.errors import InvalidRequest


class Listable(Protocol):
    id: Any
    created_at: Any


T = TypeVar("T", bound=Listable)
Item_co = TypeVar("Item_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item_co]):
    """One page of a list, whatever its items (rows, or rows with what belongs to them)."""

    items: Sequence[Item_co]
    has_more: bool


def beyond(
    columns: Sequence[Any], values: Sequence[Any], *, descending: bool
) -> ColumnElement[bool]:
    """`(columns) < (values)` when walking newest first (`descending`), else `>`: the keyset
    condition as one row-value comparison an index range scan can answer."""
    row = tuple_(*columns)
    bound = tuple_(
        *(
            bindparam(None, value, type_=column.type, unique=True)
            for column, value in zip(columns, values, strict=True)
        )
    )
    return row < bound if descending else row > bound


async def keyset_page(
    session: AsyncSession,
    model: type[T],
    query: Select[Any],
    *,
    limit: int,
    starting_after: str | None,
    visible: Callable[[T], bool] = lambda _row: True,
) -> Page[T]:
    """One page of `query` after the row `starting_after` (which must exist and be `visible`
    to the caller, else 422 naming the parameter)."""
    if starting_after is not None:
        cursor = await session.get(model, starting_after)
        if cursor is None or not visible(cursor):
            raise InvalidRequest("No such cursor", param="starting_after")
        query = query.where(
            beyond((model.created_at, model.id), (cursor.created_at, cursor.id), descending=True)
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows: list[T] = list(await session.scalars(query))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
