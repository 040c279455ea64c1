"""Key status and rotation: re-encrypt every encrypted value under the active key.

Rotation runs while the service serves requests: small write transactions (one batch of rows
each, rows locked), each with its own audit entry. It is resumable by construction: every pass
selects only rows that still hold a value under another key, so an interrupted rotation is
finished by running it again. After the data, the audit chain's MACs are moved to the active key
too (see `paysvc.audit.chain`), so that once `status` and `audit_key_usage` list only the active
key, retired keys can be removed from ENCRYPTION_KEYS_RETIRED.

Operator sequence (a rolling rotation, two phases; README "Rotating the encryption key"):
1. add the new key to ENCRYPTION_KEYS_NEXT on every instance, restarting them one at a time
   (`keys status` shows when every live instance can read it);
2. make it ENCRYPTION_KEY and move the old one to ENCRYPTION_KEYS_RETIRED, again one at a time;
3. run `paysvc keys rotate`; once `keys status` lists no value under the old key, drop it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import SystemClock
from paysvc.db.encrypted import EncryptedModel
from paysvc.db.engine import Database
from paysvc.keys import repository
from paysvc.keys.models import KeyHolder

Progress = Callable[[int, int], None]


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


async def rotate(
    db: Database,
    *,
    actor: Actor = SYSTEM,
    audit: AuditLog | None = None,
    batch_size: int = 100,
    progress: Progress | None = None,
) -> int:
    """Re-encrypt every row (and re-MAC every audit entry) not fully under the active key.

    Returns how many rows and audit entries were rewritten. `progress(done, total)` is called
    after each committed batch; `total` is counted at the start (rows written meanwhile are
    already under the active key). Raises DecryptionError if a stored value does not decrypt
    (tampered, moved to another row, or under a key missing from the keyring): fix or restore
    that row, then run again.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    audit = audit or AuditLog(SystemClock())
    keyring = db.keyring
    active = keyring.active_id
    total = await pending(db)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    for model in repository.encrypted_models():
        after: Any = None
        while True:

            async def reencrypt(
                session: AsyncSession, model: type[EncryptedModel] = model, after: Any = after
            ) -> tuple[int, Any]:
                rows = await repository.rows_not_under(session, model, active, after, batch_size)
                if not rows:
                    return 0, None
                old_keys = sorted(set().union(*(row.key_ids() for row in rows)) - {active})
                for row in rows:
                    row.reseal()
                await session.flush()  # before_flush seals every value under the active key
                audit.record(
                    session,
                    actor,
                    "keys.rotate",
                    "encryption_key",
                    active,
                    details={
                        "table": repository.table_name(model),
                        "rows": len(rows),
                        "from_keys": old_keys,
                    },
                )
                return len(rows), repository.primary_key_of(rows[-1])

            count, after = await db.run(reencrypt)
            if count == 0:
                break
            advance(count)

    after_seq = 0
    while True:

        async def remac(session: AsyncSession, after_seq: int = after_seq) -> chain.RemacBatch:
            batch = await chain.remac_batch(session, keyring, after_seq=after_seq, limit=batch_size)
            if batch.changed or batch.skipped:
                audit.record(
                    session,
                    actor,
                    "keys.rotate_audit_macs",
                    "encryption_key",
                    active,
                    outcome="success" if not batch.skipped else "partial",
                    details={"entries": batch.changed, "skipped_bad_mac": batch.skipped},
                )
            return batch

        batch = await db.run(remac)
        if batch.last_seq is None:
            break
        after_seq = batch.last_seq
        advance(batch.changed)
    await forget_unused_keys(db, dt.datetime.now(dt.UTC))
    return done
