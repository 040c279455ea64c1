"""Small shared test helpers: a clock tests can move, row counts, the sandbox ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container


class ManualClock:
    """Real time plus an offset that a test moves forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


async def count(container: Container, model: Any, *where: Any) -> int:
    async def work(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))

    return await container.db.run(work, write=False)


async def rows(container: Container, model: Any, *where: Any) -> list[Any]:
    async def work(session: AsyncSession) -> list[Any]:
        return list(await session.scalars(select(model).where(*where)))

    return await container.db.run(work, write=False)


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 60.0) -> None:
    """Poll `check` until it holds (state another task commits; no event to wait on), with a
    generous deadline: a TimeoutError means it never held."""
    async with asyncio.timeout(deadline):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
