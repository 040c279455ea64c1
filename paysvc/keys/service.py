"""Key status and rotation: re-encrypt every encrypted value under the active key.

Rotation runs while the service serves requests: each batch is read and re-encrypted outside
any transaction that writes, then stored in one short write transaction (a bulk compare-and-set:
a value a request changed meanwhile is left as the request wrote it), with its own audit entry.
It is resumable by construction: every pass selects only rows that still hold a value under
another key, so an interrupted rotation is finished by running it again. After the data, the
audit chain's MACs are moved to the active key too (see `paysvc.audit.chain`), so that once
`status` and `audit_key_usage` list only the active key, retired keys can be removed.

Operator sequence (a rolling rotation, two phases; README "Rotating the encryption key"):
1. add the new key to ENCRYPTION_KEYS_NEXT on every instance, restarting them one at a time
   (`keys status` shows when every live instance can read it);
2. make it ENCRYPTION_KEY and move the old one to ENCRYPTION_KEYS_RETIRED, again one at a time;
3. run `paysvc keys rotate`; once `keys status` lists no value under the old key, drop it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import SystemClock
from paysvc.db.encrypted import EncryptedModel
from paysvc.db.engine import Database
from paysvc.keys import repository
from paysvc.keys.keyring import Keyring
from paysvc.keys.models import KeyHolder

Progress = Callable[[int, int], None]
# Rows per batch. Each batch is read and re-encrypted with no lock held, then written in one
# short transaction (a bulk compare-and-set), so serving writes wait at most one such slice.
ROTATE_BATCH = 2000
# SQLite has one writer: rotation (another process than the server, usually) writes slices of
# SQLITE_SLICE values (about 10 ms of lock on an idle machine), at least SQLITE_GAP apart: longer
# than the busy handler's polling interval in its first ~50 ms, so a serving write waiting for
# the lock gets it at the next gap (`scripts/bench_growth` measures it).
SQLITE_SLICE = 500
SQLITE_GAP = 0.03  # seconds the write lock is left free between two slices
# PostgreSQL: ranges rotated at once (each by a task on its own connection), when a table has
# at least ROTATE_PARALLEL_MIN rows to rewrite (see `rotate`). Measured at 1M payments on a
# 2-core machine where PostgreSQL, the rotation and the serving writes share the cores: 1, 2
# and 4 workers rewrote 8,150, 7,450 and 5,940 rows/s with serving writes at p99 33, 62 and
# 102 ms; more workers pay when PostgreSQL has cores of its own (`--workers`).
ROTATE_WORKERS = 2
ROTATE_PARALLEL_MIN = 10_000


async def status(db: Database) -> dict[str, int]:
    """Encrypted values (non-null encrypted columns, all tables) per key id."""
    async with db.transaction(write=False) as session:
        counts: dict[str, int] = {}
        for model in repository.encrypted_models():
            for key_id, count in (await repository.values_by_key(session, model)).items():
                counts[key_id] = counts.get(key_id, 0) + count
        return counts


async def audit_key_usage(db: Database) -> dict[str, int]:
    """Sealed audit MACs per key id (a key listed here is still needed by `audit verify`)."""
    return await chain.key_usage(db)


async def unreadable(db: Database) -> set[str]:
    """Key ids that stored data may be under (the small `KeyInUse` record, not a scan of every
    value) and that this keyring cannot read: empty when every row can be read. A key that some
    instance merely has active, with nothing written under it yet, is not counted."""
    async with db.transaction(write=False) as session:
        in_use = await repository.keys_in_use(session)
    return in_use - set(db.keyring.key_ids)


# --- instances and the rolling rotation ------------------------------------------------------

HOLDER_HEARTBEAT = 300.0  # seconds between an instance's refreshes of its KeyHolder row
HOLDER_LIVE = dt.timedelta(seconds=3 * HOLDER_HEARTBEAT)


def instance_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


async def hold(db: Database, instance: str, started_at: dt.datetime, now: dt.datetime) -> None:
    """Record (or refresh) which keys this instance writes with and can read."""
    holder = KeyHolder(
        instance_id=instance,
        active_key_id=db.keyring.active_id,
        readable_key_ids=",".join(sorted(db.keyring.key_ids)),
        started_at=started_at,
        seen_at=now,
    )
    await db.run(lambda session: repository.save_holder(session, holder))


async def release(db: Database, instance: str) -> None:
    await db.run(lambda session: repository.remove_holder(session, instance))


@dataclass(frozen=True, slots=True)
class HolderReport:
    instance_id: str
    active_key_id: str
    readable_key_ids: tuple[str, ...]
    seen_at: dt.datetime
    cannot_read: tuple[str, ...]  # keys in use or active elsewhere that it cannot read

    @property
    def safe(self) -> bool:
        return not self.cannot_read


async def rollout(db: Database, now: dt.datetime) -> list[HolderReport]:
    """Every live instance, and whether its configuration can read everything stored and
    everything the other live instances may write (their active keys)."""
    async with db.transaction(write=False) as session:
        in_use = await repository.keys_in_use(session)
        live = await repository.holders(session, now - HOLDER_LIVE)
    needed = in_use | {holder.active_key_id for holder in live}
    reports = []
    for holder in live:
        readable = tuple(k for k in holder.readable_key_ids.split(",") if k)
        reports.append(
            HolderReport(
                holder.instance_id,
                holder.active_key_id,
                readable,
                holder.seen_at,
                tuple(sorted(needed - set(readable))),
            )
        )
    return reports


async def forget_unused_keys(db: Database, now: dt.datetime) -> set[str]:
    """After a rotation: drop from the in-use record the keys that no value and no audit MAC
    is under any more and that no live instance has active. Returns the ids dropped."""
    used = {k for counts in (await status(db), await audit_key_usage(db)) for k in counts}
    active = {report.active_key_id for report in await rollout(db, now)} | {db.keyring.active_id}

    async def work(session: AsyncSession) -> set[str]:
        unused = await repository.keys_in_use(session) - used - active
        await repository.forget_keys_in_use(session, unused)
        return unused

    return await db.run(work)


async def pending(db: Database) -> int:
    """Rows and audit entries that `rotate` would still rewrite."""
    active = db.keyring.active_id
    async with db.transaction(write=False) as session:
        total = 0
        for model in repository.encrypted_models():
            total += await repository.count_rows_not_under(session, model, active)
        return total + await chain.count_to_remac(session, db.keyring)


class _Pacer:
    """Paces rotation's write transactions. PostgreSQL locks rows only: one write per batch,
    no pause. SQLite: slices of SQLITE_SLICE values, at least SQLITE_GAP apart (the crypto of
    the next batch usually fills the gap)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._free_since = 0.0

    def slices(self, count: int) -> list[tuple[int, int]]:
        step = SQLITE_SLICE if self.db.is_sqlite else max(1, count)
        return [(first, min(count, first + step)) for first in range(0, max(1, count), step)]

    async def write(self, work: Callable[[AsyncSession], Any]) -> None:
        if self.db.is_sqlite:
            wait = self._free_since + SQLITE_GAP - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await self.db.run(work)
        self._free_since = time.monotonic()


async def rotate(
    db: Database,
    *,
    actor: Actor = SYSTEM,
    audit: AuditLog | None = None,
    batch_size: int = ROTATE_BATCH,
    progress: Progress | None = None,
    workers: int | None = None,
    parallel_min: int = ROTATE_PARALLEL_MIN,
) -> int:
    """Re-encrypt every row (and re-MAC every audit entry) not fully under the active key.

    Returns how many rows and audit entries were rewritten. `progress(done, total)` is called
    after each committed batch; `total` is counted at the start (rows written meanwhile are
    already under the active key). Raises DecryptionError if a stored value does not decrypt
    (tampered, moved to another row, or under a key missing from the keyring): fix or restore
    that row, then run again.

    `workers` ranges are rotated at once, each by its own task on its own connection (default
    ROTATE_WORKERS on PostgreSQL, 1 on SQLite, which has one writer): each table's rows to
    rewrite are split into that many primary-key ranges, the audit chain into seq ranges
    (only when there are at least `parallel_min` of them). The ranges are disjoint, so each
    value is rewritten once; each batch is its own compare-and-set transaction, so an
    interrupted parallel rotation (up to `workers` batches were in flight) resumes like a
    serial one.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if workers is None:
        workers = 1 if db.is_sqlite else ROTATE_WORKERS
    if workers < 1:
        raise ValueError("workers must be at least 1")
    rotation = _Rotation(db, actor, audit or AuditLog(SystemClock()), batch_size, progress)
    rotation.total = await pending(db)
    for model in repository.encrypted_models():
        ranges = await _key_ranges(db, model, max(parallel_min, workers), workers)
        await _all([rotation.values(model, low, high) for low, high in ranges])
    head = await chain.sealed_head(db)
    seqs: list[tuple[int, int | None]] = [(1, None)]
    if head >= max(parallel_min, workers):  # the last range also takes what is sealed meanwhile
        seqs = [(low, high) for low, high in chain.split(1, head, workers)]
        seqs[-1] = (seqs[-1][0], None)
    await _all([rotation.macs(low, high) for low, high in seqs])
    await forget_unused_keys(db, dt.datetime.now(dt.UTC))
    return rotation.done


async def _key_ranges(
    db: Database, model: type[EncryptedModel], at_least: int, parts: int
) -> list[tuple[Any, Any]]:
    """(after, up to) primary-key ranges splitting `model`'s rows to rewrite into `parts` of
    about equal size (None: unbounded); one range unless there are `at_least` such rows. The
    bounds are existing keys, so the ranges cover every key, whatever is written meanwhile."""
    if parts == 1:
        return [(None, None)]
    active = db.keyring.active_id
    async with db.transaction(write=False) as session:
        count = await repository.count_rows_not_under(session, model, active)
        if count < at_least:
            return [(None, None)]
        bounds: list[Any] = [None]
        for part in range(1, parts):
            bound = await repository.nth_key_not_under(
                session, model, active, count * part // parts
            )
            if bound is not None and bound != bounds[-1]:
                bounds.append(bound)
    bounds.append(None)
    return list(itertools.pairwise(bounds))


async def _all(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run the jobs at once; the first failure cancels the others and is raised as it is."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Rotation:
    """One `rotate` run: its batches, rewritten range by range (several ranges at once)."""

    def __init__(
        self,
        db: Database,
        actor: Actor,
        audit: AuditLog,
        batch_size: int,
        progress: Progress | None,
    ) -> None:
        self.db, self.actor, self.audit = db, actor, audit
        self.keyring, self.active = db.keyring, db.keyring.active_id
        self.batch_size, self.progress = batch_size, progress
        self.pacer = _Pacer(db)
        self.total = self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)

    async def values(self, model: type[EncryptedModel], after: Any, upto: Any) -> None:
        """Re-encrypt the values of `model`'s rows with a primary key in (after, upto]."""
        table = repository.table_name(model)
        fields = {field.column: name for name, field in model.__encrypted__.items()}
        keyring, active = self.keyring, self.active
        while True:

            async def read(
                session: AsyncSession, after: Any = after
            ) -> list[tuple[Any, dict[str, str | None]]]:
                return await repository.values_not_under(
                    session, model, active, after, self.batch_size, upto=upto
                )

            # Read and re-encrypt outside any write lock; the write is one short bulk update.
            rows = await self.db.run(read, write=False)
            if not rows:
                return
            changes, old_keys = [], set()
            for row_id, values in rows:
                for column, envelope in values.items():
                    if envelope is None or Keyring.key_id_of(envelope) == active:
                        continue
                    old_keys.add(Keyring.key_id_of(envelope))
                    associated = f"{table}.{fields[column]}.{row_id}"
                    plain = keyring.decrypt(envelope, associated)  # DecryptionError: tampered
                    changes.append((row_id, column, envelope, keyring.encrypt(plain, associated)))

            details = {"table": table, "rows": len(rows), "from_keys": sorted(old_keys)}

            async def write(
                session: AsyncSession,
                changes: list[tuple[Any, str, str, str]],
                details: dict[str, Any],
            ) -> None:
                await repository.replace_values(session, model, changes)
                self.audit.record(
                    session, self.actor, "keys.rotate", "encryption_key", active, details=details
                )

            for first, last in self.pacer.slices(len(changes)):
                part = changes[first:last]
                rows_in_part = len({row_id for row_id, *_ in part})
                await self.pacer.write(
                    partial(write, changes=part, details={**details, "rows": rows_in_part})
                )
            after = rows[-1][0]
            self.advance(len(rows))

    async def macs(self, low: int, high: int | None) -> None:
        """Re-MAC the sealed audit entries with seq in low..high (None: to the end)."""
        after_seq = low - 1
        while high is None or after_seq < high:
            limit = self.batch_size if high is None else min(self.batch_size, high - after_seq)

            async def plan(
                session: AsyncSession, after_seq: int = after_seq, limit: int = limit
            ) -> chain.RemacBatch:
                return await chain.remac_batch(
                    session, self.keyring, after_seq=after_seq, limit=limit
                )

            batch = await self.db.run(plan, write=False)  # MACs computed with no lock held
            if batch.last_seq is None:
                return

            async def store(
                session: AsyncSession, changes: list[tuple[str, str, str]], skipped: int
            ) -> None:
                await chain.store_macs(session, changes)
                self.audit.record(
                    session,
                    self.actor,
                    "keys.rotate_audit_macs",
                    "encryption_key",
                    self.active,
                    outcome="success" if not skipped else "partial",
                    details={"entries": len(changes), "skipped_bad_mac": skipped},
                )

            if batch.changes or batch.skipped:
                for first, last in self.pacer.slices(len(batch.changes)):
                    macs = batch.changes[first:last]
                    skipped = batch.skipped if first == 0 else 0
                    await self.pacer.write(partial(store, changes=macs, skipped=skipped))
            after_seq = batch.last_seq
            self.advance(len(batch.changes))
