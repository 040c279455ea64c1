from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain
from paysvc.audit.models import AuditEntry
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import SYSTEM, Actor, Role
from paysvc.clock import SystemClock
from paysvc.db.engine import Database
from paysvc.keys import repository, service
from paysvc.keys.keyring import DecryptionError, Keyring
from paysvc.payments.models import Payment

KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))
KID1 = Keyring(KEY1).active_id
KID2 = Keyring(KEY2).active_id
NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
OPERATOR = Actor(id="ops_1", role=Role.ADMIN, origin="cli")


@pytest.fixture
async def old_db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, Keyring(KEY1))
    yield database
    await database.dispose()


@pytest.fixture
async def new_db(database_url: str, old_db: Database) -> AsyncIterator[Database]:
    database = Database(database_url, Keyring(KEY2, retired=(KEY1,)))
    yield database
    await database.dispose()


def payment(i: int, **overrides: object) -> Payment:
    fields: dict[str, object] = {
        "id": f"pay_{i:04d}",
        "order_id": f"order_{i}",
        "customer_id": "17",
        "amount": 1000 + i,
        "currency": "usd",
        "status": "pending",
        "capture_method": "automatic",
        "gateway": "sandbox",
        "created_at": NOW,
        "updated_at": NOW,
        "payment_method": "pm_card_visa",
        "description": f"order {i}",
        "meta": {"n": str(i)},
        "receipt_email": f"buyer{i}@example.com",
    }
    fields.update(overrides)
    return Payment(**fields)


async def add_payments(db: Database, count: int, **overrides: object) -> None:
    async def work(session: AsyncSession) -> None:
        session.add_all([payment(i, **overrides) for i in range(count)])
        AuditLog(SystemClock()).record(session, SYSTEM, "test.setup", "payment", None)

    await db.run(work)


async def load_all(db: Database) -> list[dict[str, object]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Payment).order_by(Payment.id))).all()
        return [
            {
                "id": p.id,
                "payment_method": p.payment_method,
                "description": p.description,
                "meta": p.meta,
                "receipt_email": p.receipt_email,
            }
            for p in rows
        ]


async def execute(db: Database, sql: str, **params: object) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(text(sql), params)

    await db.run(work)


def test_finds_every_encrypted_model() -> None:
    assert Payment in repository.encrypted_models()


async def test_status_counts_values_per_key(old_db: Database) -> None:
    await add_payments(old_db, 3)
    await add_payments_without_optional(old_db)
    # 3 payments x 4 values + 1 payment with only a payment method
    assert await service.status(old_db) == {KID1: 13}


async def add_payments_without_optional(db: Database) -> None:
    async def work(session: AsyncSession) -> None:
        session.add(
            payment(99, description=None, meta=None, receipt_email=None, payment_method="pm_x")
        )

    await db.run(work)


async def test_rotate_then_new_key_alone_reads_everything(
    old_db: Database, new_db: Database, database_url: str
) -> None:
    await add_payments(old_db, 5)
    await chain.seal_pending(old_db, old_db.keyring)
    expected = await load_all(old_db)
    assert len(expected) == 5

    seen: list[tuple[int, int]] = []
    audit = AuditLog(SystemClock())
    changed = await service.rotate(
        new_db, actor=OPERATOR, audit=audit, batch_size=2, progress=lambda d, t: seen.append((d, t))
    )
    assert changed == 5 + 1  # five payments, one sealed audit entry re-MACed
    assert seen[-1] == (6, 6)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert await service.status(new_db) == {KID2: 20}
    assert await service.pending(new_db) == 0

    await chain.seal_pending(new_db, new_db.keyring)
    # the setup entry, three re-encryption batches, one re-MAC batch
    assert await service.audit_key_usage(new_db) == {KID2: 5}

    alone = Database(database_url, Keyring(KEY2))
    try:
        assert await load_all(alone) == expected
        assert (await chain.verify(alone, alone.keyring)).ok
    finally:
        await alone.dispose()
    with pytest.raises(DecryptionError):  # and the old key alone no longer reads them
        await load_all(old_db)


async def test_each_batch_is_audited(old_db: Database, new_db: Database) -> None:
    await add_payments(old_db, 3)
    await service.rotate(new_db, actor=OPERATOR, batch_size=2)
    async with new_db.transaction(write=False) as session:
        result = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "keys.rotate").order_by(AuditEntry.id)
        )
        entries = list(result.all())
        assert len(entries) == 2
        assert {e.actor_id for e in entries} == {"ops_1"}
        assert all(e.resource_id == KID2 for e in entries)
        details = sorted((json.loads(e.details) for e in entries), key=lambda d: -d["rows"])
        assert details == [
            {"from_keys": [KID1], "rows": 2, "table": "payments"},
            {"from_keys": [KID1], "rows": 1, "table": "payments"},
        ]


class Stop(Exception):
    pass


async def test_interrupted_rotation_resumes(old_db: Database, new_db: Database) -> None:
    await add_payments(old_db, 4)
    expected = await load_all(old_db)

    def stop_after_first_batch(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        await service.rotate(new_db, batch_size=1, progress=stop_after_first_batch)
    assert await service.status(new_db) == {KID1: 12, KID2: 4}  # one row (4 values) done
    assert await service.pending(new_db) == 3

    assert await service.rotate(new_db, batch_size=1) == 3
    assert await service.status(new_db) == {KID2: 16}
    assert await load_all(new_db) == expected
    assert await service.rotate(new_db, batch_size=1) == 0  # nothing left: a no-op


async def test_rows_written_during_rotation_are_under_the_active_key(
    old_db: Database, new_db: Database
) -> None:
    await add_payments(old_db, 6)

    async def writer() -> None:
        for i in range(6):
            await add_payments_one(new_db, 100 + i)
            await asyncio.sleep(0)

    await asyncio.gather(service.rotate(new_db, batch_size=1), writer())
    assert await service.status(new_db) == {KID2: 12 * 4}


async def add_payments_one(db: Database, i: int) -> None:
    async def work(session: AsyncSession) -> None:
        session.add(payment(i))

    await db.run(work)


async def test_two_rotations_at_once(old_db: Database, new_db: Database, database_url: str) -> None:
    await add_payments(old_db, 10)
    other = Database(database_url, Keyring(KEY2, retired=(KEY1,)))
    try:
        counts = await asyncio.gather(
            service.rotate(new_db, batch_size=3), service.rotate(other, batch_size=3)
        )
        assert sum(counts) >= 10
        assert await service.status(new_db) == {KID2: 40}
    finally:
        await other.dispose()


async def test_swapped_ciphertexts_do_not_decrypt(old_db: Database) -> None:
    await add_payments(old_db, 2)
    await execute(
        old_db,
        "UPDATE payments SET description_enc = CASE id "
        "WHEN 'pay_0000' THEN (SELECT description_enc FROM payments WHERE id = 'pay_0001') "
        "ELSE (SELECT description_enc FROM payments WHERE id = 'pay_0000') END",
    )
    with pytest.raises(DecryptionError):
        await load_all(old_db)


async def test_value_moved_to_another_column_does_not_decrypt(old_db: Database) -> None:
    await add_payments(old_db, 1)
    await execute(old_db, "UPDATE payments SET receipt_email_enc = description_enc")
    with pytest.raises(DecryptionError):
        await load_all(old_db)


async def test_flipped_byte_does_not_decrypt(old_db: Database) -> None:
    await add_payments(old_db, 1)
    async with old_db.transaction(write=False) as session:
        envelope = await session.scalar(text("SELECT meta_enc FROM payments"))
    assert isinstance(envelope, str)
    head, payload = envelope.rsplit(":", 1)
    position = len(payload) // 2
    flipped = (
        payload[:position] + ("A" if payload[position] != "A" else "B") + payload[position + 1 :]
    )
    await execute(old_db, "UPDATE payments SET meta_enc = :v", v=f"{head}:{flipped}")
    with pytest.raises(DecryptionError):
        await load_all(old_db)


async def test_rotation_stops_on_a_tampered_row(old_db: Database, new_db: Database) -> None:
    await add_payments(old_db, 2)
    await execute(old_db, "UPDATE payments SET receipt_email_enc = description_enc")
    with pytest.raises(DecryptionError):
        await service.rotate(new_db)


async def test_rotation_does_not_launder_a_tampered_audit_entry(
    old_db: Database, new_db: Database
) -> None:
    await add_payments(old_db, 1)
    await add_payments_one(old_db, 50)  # no audit entry; just more data
    await chain.seal_pending(old_db, old_db.keyring)
    await execute(old_db, "UPDATE audit_entries SET action = 'something.else'")
    await service.rotate(new_db)
    result = await chain.verify(new_db, new_db.keyring)
    assert not result.ok and result.problem is not None
    assert "mismatch" in result.problem
    assert KID1 in await service.audit_key_usage(new_db)  # left under its old key


async def audit_entries(db: Database, count: int) -> None:
    """`count` sealed audit entries (one transaction each), under `db`'s active key."""
    for n in range(count):

        async def work(session: AsyncSession, n: int = n) -> None:
            AuditLog(SystemClock()).record(session, SYSTEM, "test.setup", "payment", f"pay_{n}")

        await db.run(work)
    await chain.seal_pending(db, db.keyring)


async def mac_keys_by_seq(db: Database) -> dict[int, str]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(AuditEntry.seq, AuditEntry.mac).where(AuditEntry.seq.is_not(None))
        )
        return {int(seq): str(mac).split(":", 1)[0] for seq, mac in rows}


async def test_audit_macs_are_moved_across_batches(old_db: Database, new_db: Database) -> None:
    """Re-MACing reads each batch's seq range with the entry before it: every entry is moved,
    whatever the batch size, and the chain still verifies under the new key alone."""
    await audit_entries(old_db, 7)
    assert await service.rotate(new_db, batch_size=3) == 7
    before = await mac_keys_by_seq(new_db)
    assert {before[seq] for seq in range(1, 8)} == {KID2}
    await chain.seal_pending(new_db, new_db.keyring)
    assert (await chain.verify(new_db, new_db.keyring)).ok


async def test_entries_after_a_gap_are_not_re_maced(old_db: Database, new_db: Database) -> None:
    """A deleted entry leaves the next one without a checkable link: it keeps its old MAC (never
    laundered), the others are moved, and verify still names the gap."""
    await audit_entries(old_db, 7)
    await execute(old_db, "DELETE FROM audit_entries WHERE seq = 4")
    assert await service.rotate(new_db, batch_size=2) == 5
    keys = await mac_keys_by_seq(new_db)
    assert keys[5] == KID1
    assert {keys[seq] for seq in (1, 2, 3, 6, 7)} == {KID2}
    result = await chain.verify(new_db, new_db.keyring)
    assert not result.ok and result.problem is not None and "gap" in result.problem


async def test_sqlite_writes_in_slices_with_gaps(
    old_db: Database, new_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a batch is written in slices (each its own audited transaction), the write
    lock left free between two; PostgreSQL writes a batch at once."""
    monkeypatch.setattr(service, "SQLITE_SLICE", 3)
    await add_payments(old_db, 4)  # 16 values
    expected = await load_all(old_db)
    assert await service.rotate(new_db, actor=OPERATOR, batch_size=10) == 4
    async with new_db.transaction(write=False) as session:
        result = await session.scalars(
            select(AuditEntry.details).where(AuditEntry.action == "keys.rotate")
        )
        rows = [json.loads(details)["rows"] for details in result]
    if new_db.is_sqlite:
        assert len(rows) == 6  # 16 values, 3 per slice
    else:
        assert rows == [4]
    assert await service.status(new_db) == {KID2: 16}
    assert await load_all(new_db) == expected  # every value moved, none lost


async def test_a_parallel_rotation_rewrites_every_value_exactly_once(
    old_db: Database, new_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges rotated at once (each by its own task, on its own connection) are disjoint and
    cover every row and every audit entry: interrupted, then resumed, the rotation rewrote
    each row and each MAC once (its audited batches add up to exactly the rows and entries),
    missed none, and the chain verifies under the new key alone."""
    await add_payments(old_db, 30)  # 120 values, and one audit entry
    await audit_entries(old_db, 12)  # 13 sealed entries in all
    expected = await load_all(old_db)
    ranges: set[object] = set()
    read_values = repository.values_not_under

    async def read_spy(*args: Any, upto: Any = None) -> Any:
        ranges.add(upto)
        return await read_values(*args, upto=upto)

    monkeypatch.setattr(repository, "values_not_under", read_spy)
    parallel: dict[str, Any] = {"batch_size": 4, "workers": 3, "parallel_min": 0, "actor": OPERATOR}

    def stop_after_first_batch(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        await service.rotate(new_db, progress=stop_after_first_batch, **parallel)
    assert 0 < await service.pending(new_db) < 30 + 13
    ranges.clear()
    await service.rotate(new_db, **parallel)
    assert len(ranges) == 3  # three primary-key ranges, the last one unbounded

    async with new_db.transaction(write=False) as session:
        audited = await session.execute(
            select(AuditEntry.action, AuditEntry.details).where(
                AuditEntry.action.in_(("keys.rotate", "keys.rotate_audit_macs"))
            )
        )
        batches = [(action, json.loads(details)) for action, details in audited]
    assert sum(d["rows"] for action, d in batches if action == "keys.rotate") == 30
    assert sum(d["entries"] for action, d in batches if action != "keys.rotate") == 13
    assert await service.status(new_db) == {KID2: 120}
    assert await load_all(new_db) == expected
    await chain.seal_pending(new_db, new_db.keyring)  # the rotation's own entries
    alone = Database(new_db.url, Keyring(KEY2))
    try:
        assert await service.audit_key_usage(alone) == {KID2: await chain.sealed_head(alone)}
        assert (await chain.verify(alone, alone.keyring)).ok
    finally:
        await alone.dispose()
