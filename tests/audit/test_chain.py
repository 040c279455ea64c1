from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain, repository
from paysvc.audit.models import AuditEntry
from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.db.engine import Database
from paysvc.errors import InvalidRequest
from paysvc.keys.keyring import Keyring
from tests.support import eventually

KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))
T0 = dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=dt.UTC)
ADMIN = Actor(id="admin_1", role=Role.ADMIN, origin="10.0.0.1", request_id="req_1")


class StepClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.current = start

    def now(self) -> dt.datetime:
        self.current += dt.timedelta(seconds=1)
        return self.current


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, Keyring(KEY1))
    yield database
    await database.dispose()


async def write_entries(db: Database, count: int, clock: StepClock | None = None) -> list[str]:
    audit = AuditLog(clock or StepClock())

    async def work(session: AsyncSession) -> list[str]:
        return [
            audit.record(
                session,
                ADMIN,
                "payment.status_changed",
                "payment",
                f"pay_{i}",
                details={"to": "captured", "n": i},
            ).id
            for i in range(count)
        ]

    return await db.run(work)


async def execute(db: Database, sql: str, **params: object) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(text(sql), params)

    await db.run(work)


async def entries(db: Database) -> list[AuditEntry]:
    async with db.transaction(write=False) as session:
        result = await session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
        rows = list(result.all())
        session.expunge_all()  # a read-only unit of work rolls back, which would expire them
        return rows


async def test_seal_then_verify_ok(db: Database) -> None:
    ids = await write_entries(db, 5)
    before = await entries(db)
    assert all(e.seq is None and e.mac is not None for e in before)  # stamped at insert
    assert await chain.seal_pending(db, db.keyring) == 5
    assert await chain.seal_pending(db, db.keyring) == 0
    sealed = await entries(db)
    assert [e.seq for e in sealed] == [1, 2, 3, 4, 5]
    assert [e.id for e in sealed] == ids
    assert all(e.mac and e.mac.startswith(db.keyring.active_id + ":") for e in sealed)
    assert all(e.mac and len(e.mac) <= 64 for e in sealed)
    result = await chain.verify(db, db.keyring, now=T0)
    assert result == chain.VerifyResult(True, 5, None, None, 5, ids[-1])


async def test_empty_trail_verifies(db: Database) -> None:
    assert await chain.verify(db, db.keyring) == chain.VerifyResult(True, 0)


async def test_sealing_continues_the_chain(db: Database) -> None:
    clock = StepClock()
    await write_entries(db, 3, clock)
    await chain.seal_pending(db, db.keyring)
    await write_entries(db, 3, clock)
    await chain.seal_pending(db, db.keyring, batch_size=2)
    assert [e.seq for e in await entries(db)] == [1, 2, 3, 4, 5, 6]
    assert (await chain.verify(db, db.keyring, now=T0)).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "payment.refunded"),
        ("details", '{"n": 2, "to": "refunded"}'),
        ("actor_id", "someone_else"),
        ("outcome", "denied"),
        ("request_id", None),
        ("occurred_at", T0 + dt.timedelta(seconds=9)),
    ],
)
async def test_edited_entry_is_named(db: Database, column: str, value: object) -> None:
    ids = await write_entries(db, 5)
    await chain.seal_pending(db, db.keyring)
    table = AuditEntry.__table__

    async def edit(session: AsyncSession) -> None:
        await session.execute(update(table).where(table.c.id == ids[2]).values({column: value}))

    await db.run(edit)
    result = await chain.verify(db, db.keyring, now=T0)
    assert not result.ok
    assert result.first_bad == ids[2]
    assert result.problem is not None and "MAC mismatch" in result.problem


async def test_edited_mac_is_named(db: Database) -> None:
    ids = await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    await execute(db, "UPDATE audit_entries SET mac = NULL WHERE id = :id", id=ids[1])
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad) == (False, ids[1])


async def test_deleted_entry_is_pointed_at(db: Database) -> None:
    ids = await write_entries(db, 5)
    await chain.seal_pending(db, db.keyring)
    await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[2])
    result = await chain.verify(db, db.keyring, now=T0)
    assert not result.ok
    assert result.first_bad == ids[3]  # the entry right after the hole
    assert result.problem is not None and "expected seq 3, found 4" in result.problem


async def test_deleted_first_entry_is_pointed_at(db: Database) -> None:
    ids = await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[0])
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad) == (False, ids[1])


async def test_delete_and_renumber_is_caught(db: Database) -> None:
    ids = await write_entries(db, 4)
    await chain.seal_pending(db, db.keyring)
    await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[1])
    # (two steps: PostgreSQL checks the unique seq row by row during one UPDATE)
    await execute(db, "UPDATE audit_entries SET seq = -seq WHERE seq > 2")
    await execute(db, "UPDATE audit_entries SET seq = -seq - 1 WHERE seq < 0")
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad) == (False, ids[2])


def forged_row(entry_id: str, *, seq: int | None, mac: str | None) -> dict[str, object]:
    return {
        "id": entry_id,
        "occurred_at": T0 + dt.timedelta(seconds=30),
        "actor_id": "admin_1",
        "actor_role": "admin",
        "action": "payment.refunded",
        "resource_type": "payment",
        "resource_id": "pay_x",
        "outcome": "success",
        "origin": "10.0.0.1",
        "request_id": None,
        "details": "{}",
        "seq": seq,
        "mac": mac,
    }


async def insert_raw(db: Database, row: dict[str, object]) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(AuditEntry.__table__.insert().values(**row))

    await db.run(work)


async def test_forged_sealed_entry_is_named(db: Database) -> None:
    ids = await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    [*_, last] = await entries(db)
    # Copying a genuine MAC does not help: it is bound to another entry.
    await insert_raw(db, forged_row("aud_forged", seq=4, mac=last.mac))
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad) == (False, "aud_forged")
    assert ids  # genuine entries before it verified


async def test_forged_entry_with_unknown_key_is_named(db: Database) -> None:
    await write_entries(db, 2)
    await chain.seal_pending(db, db.keyring)
    await insert_raw(db, forged_row("aud_forged", seq=3, mac="abcdefabcdef:AAAA"))
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad) == (False, "aud_forged")
    assert result.problem is not None and "not in the keyring" in result.problem


async def test_forged_unsealed_entry_is_never_sealed_and_is_named(db: Database) -> None:
    await write_entries(db, 2)
    await insert_raw(db, forged_row("aud_forged", seq=None, mac=None))
    await write_entries(db, 2, StepClock(T0 + dt.timedelta(minutes=1)))
    assert await chain.seal_pending(db, db.keyring) == 4
    assert await chain.seal_pending(db, db.keyring) == 0
    sealed = await entries(db)
    assert [e.seq for e in sealed if e.id != "aud_forged"] == [1, 2, 3, 4]
    result = await chain.verify(db, db.keyring, now=T0)
    assert (result.ok, result.first_bad, result.last_seq) == (False, "aud_forged", 4)
    assert result.problem is not None and "outside the service" in result.problem


async def test_many_forged_unsealed_rows_do_not_block_sealing(db: Database) -> None:
    for i in range(5):
        await insert_raw(
            db, {**forged_row(f"aud_forged{i}", seq=None, mac=None), "occurred_at": T0}
        )
    await write_entries(db, 3)
    assert await chain.seal_pending(db, db.keyring, batch_size=2) == 3


async def test_unsealed_entry_past_grace_is_reported(db: Database) -> None:
    ids = await write_entries(db, 2)
    assert (await chain.verify(db, db.keyring, now=T0)).ok  # within the grace period
    late = T0 + dt.timedelta(hours=1)
    result = await chain.verify(db, db.keyring, now=late)
    assert (result.ok, result.first_bad) == (False, ids[0])
    assert result.problem is not None and "unsealed" in result.problem
    await chain.seal_pending(db, db.keyring)
    assert (await chain.verify(db, db.keyring, now=late)).ok


async def test_concurrent_sealers_build_one_chain(db: Database, database_url: str) -> None:
    other = Database(database_url, Keyring(KEY1))
    try:
        for _ in range(5):
            await write_entries(db, 20)
        counts = await asyncio.gather(
            chain.seal_pending(db, db.keyring, batch_size=7),
            chain.seal_pending(other, other.keyring, batch_size=7),
            chain.seal_pending(db, db.keyring, batch_size=7),
        )
        assert sum(counts) == 100
        assert [e.seq for e in await entries(db)] == list(range(1, 101))
        assert (await chain.verify(db, db.keyring, now=T0)).ok
    finally:
        await other.dispose()


async def test_chain_survives_key_rotation(db: Database, database_url: str) -> None:
    await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    rotated = Database(database_url, Keyring(KEY2, retired=(KEY1,)))
    try:
        await write_entries(rotated, 2, StepClock(T0 + dt.timedelta(minutes=1)))
        assert await chain.seal_pending(rotated, rotated.keyring) == 2
        assert (await chain.verify(rotated, rotated.keyring, now=T0)).ok
        usage = await chain.key_usage(rotated)
        assert usage == {Keyring(KEY1).active_id: 3, Keyring(KEY2).active_id: 2}
        # Without the old key, its MACs cannot be checked: verify says so instead of passing.
        result = await chain.verify(rotated, Keyring(KEY2), now=T0)
        assert not result.ok and result.problem is not None
        assert "not in the keyring" in result.problem
    finally:
        await rotated.dispose()


async def test_audit_sealer_task(db: Database) -> None:
    sealer = chain.AuditSealer(db, db.keyring, interval=60)
    task = asyncio.create_task(sealer.run())
    try:
        await write_entries(db, 3)
        sealer.wake()

        async def sealed() -> bool:
            return all(e.seq is not None for e in await entries(db))

        await eventually(sealed)
        assert [e.seq for e in await entries(db)] == [1, 2, 3]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_export_jsonl(db: Database) -> None:
    ids = await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    out = io.StringIO()
    seen: list[int] = []
    assert await chain.export(db, out, fmt="jsonl", progress=seen.append) == 3
    assert seen == [3]
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == ids
    first = records[0]
    assert first["seq"] == 1
    assert first["occurred_at"] == "2026-11-26T10:00:01Z"
    assert first["details"] == {"to": "captured", "n": 0}
    assert (first["actor_id"], first["actor_role"], first["origin"]) == (
        "admin_1",
        "admin",
        "10.0.0.1",
    )
    assert first["action"] == "payment.status_changed" and first["resource_id"] == "pay_0"
    assert first["mac"].startswith(db.keyring.active_id + ":")


async def test_export_csv_with_time_window(db: Database) -> None:
    ids = await write_entries(db, 4)  # at T0 + 1s .. T0 + 4s
    out = io.StringIO()
    count = await chain.export(
        db,
        out,
        since=T0 + dt.timedelta(seconds=2),
        until=T0 + dt.timedelta(seconds=4),
        fmt="csv",
    )
    assert count == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(chain.EXPORT_COLUMNS)
    assert [r["id"] for r in rows] == ids[1:3]
    assert rows[0]["seq"] == ""  # not sealed yet
    assert json.loads(rows[0]["details"]) == {"n": 1, "to": "captured"}
    assert rows[0]["occurred_at"] == "2026-11-26T10:00:02Z"


async def test_export_rejects_unknown_format(db: Database) -> None:
    with pytest.raises(ValueError):
        await chain.export(db, io.StringIO(), fmt="xml")  # type: ignore[arg-type]


async def test_list_entries_filters_and_pages(db: Database) -> None:
    ids = await write_entries(db, 5)
    other = Actor(id="svc_orders", role=Role.SERVICE, origin="orders")

    async def one_more(session: AsyncSession) -> str:
        clock = StepClock(T0 + dt.timedelta(minutes=5))
        return AuditLog(clock).record(session, other, "refund.created", "refund", "pay_3").id

    extra = await db.run(one_more)
    async with db.transaction(write=False) as session:
        page, more = await repository.list_entries(session, limit=2)
        assert [e.id for e in page] == [extra, ids[4]] and more
        page, more = await repository.list_entries(session, limit=2, starting_after=page[-1].id)
        assert [e.id for e in page] == [ids[3], ids[2]] and more
        page, more = await repository.list_entries(session, limit=2, starting_after=page[-1].id)
        assert [e.id for e in page] == [ids[1], ids[0]] and not more
        page, _ = await repository.list_entries(session, resource_id="pay_3")
        assert [e.id for e in page] == [extra, ids[3]]
        page, _ = await repository.list_entries(session, actor_id="svc_orders")
        assert [e.id for e in page] == [extra]
        page, _ = await repository.list_entries(
            session, since=T0 + dt.timedelta(seconds=2), until=T0 + dt.timedelta(seconds=4)
        )
        assert [e.id for e in page] == [ids[2], ids[1]]
        with pytest.raises(InvalidRequest):
            await repository.list_entries(session, starting_after="aud_missing")


async def test_stopping_the_sealer_seals_what_is_left(db: Database) -> None:
    sealer = chain.AuditSealer(db, db.keyring, interval=60)
    task = asyncio.create_task(sealer.run())
    await write_entries(db, 2)
    sealer.stop()  # no wake(): stop alone seals the rest, then run() returns
    await asyncio.wait_for(task, timeout=60)  # only a guard against hanging
    assert [e.seq for e in await entries(db)] == [1, 2]
