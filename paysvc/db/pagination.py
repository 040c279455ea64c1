"""Cursor pagination shared by every list: newest first, keyset on (created_at, id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.errors import InvalidRequest


class Listable(Protocol):
    id: Any
    created_at: Any


T = TypeVar("T", bound=Listable)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_more: bool


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
        created_at: Any = model.created_at
        row_id: Any = model.id
        query = query.where(
            or_(
                created_at < cursor.created_at,
                and_(created_at == cursor.created_at, row_id < cursor.id),
            )
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows: list[T] = list(await session.scalars(query))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
