"""All SQL for the audit trail: the sealer's queries, streaming reads, the admin list."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.integrity import KEY_ID_LENGTH
from paysvc.audit.models import AuditCheckpoint, AuditEntry
from paysvc.db.pagination import beyond
from paysvc.errors import InvalidRequest

STREAM_CHUNK = 2000
# pg_advisory_xact_lock key for "sealing the audit chain" (b"paysvc\x00\x01" as an int64).
CHAIN_LOCK_KEY = 0x7061797376630001
_TABLE = AuditEntry.__table__


async def lock_chain(session: AsyncSession) -> None:
    """Serialize sealers until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: the write unit of work already holds
    the database write lock (BEGIN IMMEDIATE), so there is nothing more to take.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})


async def last_sealed(session: AsyncSession) -> AuditEntry | None:
    stmt = select(AuditEntry).where(AuditEntry.seq.is_not(None))
    result = await session.scalars(stmt.order_by(AuditEntry.seq.desc()).limit(1))
    return result.first()


async def newest_sealed(session: AsyncSession) -> tuple[int, str] | None:
    """(seq, id) of the head of the chain, or None when nothing is sealed yet."""
    stmt = select(_TABLE.c.seq, _TABLE.c.id).where(_TABLE.c.seq.is_not(None))
    row = (await session.execute(stmt.order_by(_TABLE.c.seq.desc()).limit(1))).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def unsealed_batch(
    session: AsyncSession, after: tuple[dt.datetime, str] | None, limit: int
) -> list[RowMapping]:
    """Unsealed entries, as plain rows, in (occurred_at, id) order, after a keyset cursor."""
    stmt = select(_TABLE).where(_TABLE.c.seq.is_(None))
    if after is not None:
        stmt = stmt.where(_after(after))
    stmt = stmt.order_by(_TABLE.c.occurred_at, _TABLE.c.id).limit(limit)
    return list((await session.execute(stmt)).mappings())


async def store_seals(session: AsyncSession, seals: list[tuple[str, int, str]]) -> None:
    """Give each (id, seq, sealed MAC) entry its place in the chain: one bulk UPDATE."""
    if not seals:
        return
    table: Any = _TABLE  # Core (not ORM) UPDATE: executemany with its own WHERE
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.seq.is_(None))
        .values(seq=bindparam("b_seq"), mac=bindparam("b_mac"))
    )
    await session.execute(
        stmt, [{"b_id": entry, "b_seq": seq, "b_mac": mac} for entry, seq, mac in seals]
    )


def _after(cursor: tuple[dt.datetime, str]) -> Any:
    return beyond((AuditEntry.occurred_at, AuditEntry.id), cursor, descending=False)


async def _stream(session: AsyncSession, stmt: Select[Any]) -> AsyncIterator[dict[str, Any]]:
    """Rows as plain dicts, fetched `STREAM_CHUNK` at a time (one await per chunk, not per row:
    the verifier reads a million rows this way)."""
    result = await session.stream(stmt.execution_options(yield_per=STREAM_CHUNK))
    names = list(result.keys())
    async for chunk in result.partitions():
        for row in chunk:
            yield dict(zip(names, row, strict=True))


def stream_sealed(session: AsyncSession) -> AsyncIterator[dict[str, Any]]:
    """Every sealed entry, as plain rows, in seq order (constant memory)."""
    stmt = select(_TABLE).where(_TABLE.c.seq.is_not(None)).order_by(_TABLE.c.seq)
    return _stream(session, stmt)


def stream_sealed_range(
    session: AsyncSession, low: int | None, high: int
) -> AsyncIterator[dict[str, Any]]:
    """Sealed entries with low <= seq <= high (no lower bound when `low` is None), seq order."""
    stmt = select(_TABLE).where(_TABLE.c.seq.is_not(None), _TABLE.c.seq <= high)
    if low is not None:
        stmt = stmt.where(_TABLE.c.seq >= low)
    return _stream(session, stmt.order_by(_TABLE.c.seq))


async def next_sealed(session: AsyncSession, seq: int) -> tuple[int, str] | None:
    """(seq, id) of the first sealed entry at or after `seq`."""
    stmt = select(AuditEntry.seq, AuditEntry.id).where(AuditEntry.seq >= seq)
    row = (await session.execute(stmt.order_by(AuditEntry.seq).limit(1))).first()
    return (int(row[0] or 0), str(row[1])) if row is not None else None


async def latest_checkpoint(session: AsyncSession, at_most: int) -> AuditCheckpoint | None:
    stmt = select(AuditCheckpoint).where(AuditCheckpoint.seq <= at_most)
    return (await session.scalars(stmt.order_by(AuditCheckpoint.seq.desc()).limit(1))).first()


async def save_checkpoint(session: AsyncSession, checkpoint: AuditCheckpoint) -> None:
    if await session.get(AuditCheckpoint, checkpoint.seq) is None:
        session.add(checkpoint)
        await session.flush()


def stream_unsealed(session: AsyncSession) -> AsyncIterator[dict[str, Any]]:
    stmt = select(_TABLE).where(_TABLE.c.seq.is_(None)).order_by(_TABLE.c.occurred_at, _TABLE.c.id)
    return _stream(session, stmt)


def stream_between(
    session: AsyncSession, since: dt.datetime | None, until: dt.datetime | None
) -> AsyncIterator[dict[str, Any]]:
    """Entries with since <= occurred_at < until, oldest first (for export)."""
    stmt = select(_TABLE)
    if since is not None:
        stmt = stmt.where(_TABLE.c.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(_TABLE.c.occurred_at < until)
    return _stream(session, stmt.order_by(_TABLE.c.occurred_at, _TABLE.c.id))


async def sealed_not_under_key(
    session: AsyncSession, key_id: str, after_seq: int, limit: int
) -> list[AuditEntry]:
    """Sealed entries whose MAC was made with another key than `key_id`, in seq order."""
    stmt = (
        select(AuditEntry)
        .where(
            AuditEntry.seq > after_seq,
            AuditEntry.mac.is_not(None),
            ~AuditEntry.mac.startswith(f"{key_id}:", autoescape=True),
        )
        .order_by(AuditEntry.seq)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def count_sealed_not_under_key(session: AsyncSession, key_id: str) -> int:
    stmt = select(func.count()).where(
        AuditEntry.seq.is_not(None),
        AuditEntry.mac.is_not(None),
        ~AuditEntry.mac.startswith(f"{key_id}:", autoescape=True),
    )
    return int(await session.scalar(stmt) or 0)


async def replace_macs(session: AsyncSession, changes: list[tuple[str, str, str]]) -> None:
    """Bulk compare-and-set of (id, old MAC, new MAC)."""
    if not changes:
        return
    table: Any = _TABLE  # Core (not ORM) UPDATE: executemany with its own WHERE
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.mac == bindparam("b_old"))
        .values(mac=bindparam("b_new"))
    )
    await session.execute(
        stmt, [{"b_id": entry, "b_old": old, "b_new": new} for entry, old, new in changes]
    )


async def by_seq(session: AsyncSession, seqs: Iterable[int]) -> dict[int, AuditEntry]:
    wanted = sorted(set(seqs))
    if not wanted:
        return {}
    result = await session.scalars(select(AuditEntry).where(AuditEntry.seq.in_(wanted)))
    return {entry.seq: entry for entry in result if entry.seq is not None}


async def mac_key_usage(session: AsyncSession) -> dict[str, int]:
    """How many sealed entries carry a MAC under each key id."""
    key_id = func.substr(AuditEntry.mac, 1, KEY_ID_LENGTH)
    stmt = (
        select(key_id, func.count())
        .where(AuditEntry.seq.is_not(None), AuditEntry.mac.is_not(None))
        .group_by(key_id)
    )
    return {str(kid): int(count) for kid, count in (await session.execute(stmt)).tuples()}


async def list_entries(
    session: AsyncSession,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    resource_id: str | None = None,
    actor_id: str | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> tuple[list[AuditEntry], bool]:
    """A page of entries, newest first (as Stripe lists), and whether more follow.

    `starting_after` is the id of the last entry of the previous page; pagination is a keyset on
    (occurred_at, id), so pages stay stable while new entries arrive.
    """
    limit = max(1, min(limit, 100))
    stmt = select(AuditEntry)
    if since is not None:
        stmt = stmt.where(AuditEntry.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.occurred_at < until)
    if resource_id is not None:
        stmt = stmt.where(AuditEntry.resource_id == resource_id)
    if actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == actor_id)
    if starting_after is not None:
        cursor = await session.get(AuditEntry, starting_after)
        if cursor is None:
            raise InvalidRequest("No such audit entry to start after", param="starting_after")
        stmt = stmt.where(
            beyond(
                (AuditEntry.occurred_at, AuditEntry.id),
                (cursor.occurred_at, cursor.id),
                descending=True,
            )
        )
    stmt = stmt.order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit
