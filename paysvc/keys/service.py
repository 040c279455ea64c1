"""Key status and rotation: re-encrypt every encrypted value under the active key.

Rotation runs while the service serves requests: small write transactions (one batch of rows
each, rows locked), each with its own audit entry. It is resumable by construction: every pass
selects only rows that still hold a value under another key, so an interrupted rotation is
finished by running it again. After the data, the audit chain's MACs are moved to the active key
too (see `paysvc.audit.chain`), so that once `status` and `audit_key_usage` list only the active
key, retired keys can be removed from ENCRYPTION_KEYS_RETIRED.

Operator sequence: set ENCRYPTION_KEY to the new key and move the old one into
ENCRYPTION_KEYS_RETIRED; restart the instances; run `paysvc keys rotate`; check `keys status`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor
from paysvc.clock import SystemClock
from paysvc.db.encrypted import EncryptedModel
from paysvc.db.engine import Database
from paysvc.keys import repository

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


async def unreadable(db: Database) -> dict[str, int]:
    """Values and audit MACs under key ids missing from the keyring (a wrong ENCRYPTION_KEY, or
    a retired key dropped too early), per key id; empty when everything can be read.

    Scans the encrypted columns once (a start-up check: a second or so per million rows)."""
    known = set(db.keyring.key_ids)
    missing: dict[str, int] = {}
    for counts in (await status(db), await audit_key_usage(db)):
        for key_id, count in counts.items():
            if key_id not in known:
                missing[key_id] = missing.get(key_id, 0) + count
    return missing


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
    return done
