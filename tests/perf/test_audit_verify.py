"""Audit verify at scale: ranges verified in parallel processes report exactly what one serial
walk reports, and a MACed checkpoint lets verification resume where it last succeeded."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit import chain
from paysvc.audit.chain import seal_pending
from paysvc.audit.models import AuditCheckpoint
from paysvc.bootstrap import Container
from paysvc.db.engine import Database
from tests.audit.test_chain import T0, db, execute, write_entries
from tests.conftest import Api
from tests.security.helpers import paysvc
from tests.security.test_audit_cli import sealed_trail

__all__ = ["db"]


async def tamper(db: Database, how: str, ids: list[str]) -> None:
    if how == "delete_at_boundary":  # 12 entries in 2 ranges: 1-6 and 7-12
        await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[5])
    elif how == "delete_block_across_boundary":
        for n in (4, 5, 6):
            await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[n])
    elif how == "delete_end_of_first_range":
        for n in (4, 5):
            await execute(db, "DELETE FROM audit_entries WHERE id = :id", id=ids[n])
    elif how == "two_edits":  # the first one in seq order is named
        for n in (9, 2):
            await execute(db, "UPDATE audit_entries SET mac = NULL WHERE id = :id", id=ids[n])


@pytest.mark.parametrize(
    "how",
    [
        "none",
        "delete_at_boundary",
        "delete_block_across_boundary",
        "delete_end_of_first_range",
        "two_edits",
    ],
)
async def test_parallel_ranges_report_what_a_serial_walk_reports(db: Database, how: str) -> None:
    ids = await write_entries(db, 12)
    await chain.seal_pending(db, db.keyring)
    await tamper(db, how, ids)
    serial = await chain.verify(db, db.keyring, now=T0)
    parallel = await chain.verify(db, db.keyring, now=T0, workers=2, parallel_min=0)
    assert (parallel.ok, parallel.first_bad, parallel.problem) == (
        serial.ok,
        serial.first_bad,
        serial.problem,
    )
    assert serial.ok == (how == "none")
    if how == "none":
        assert parallel == serial == chain.VerifyResult(True, 12, None, None, 12, ids[-1])
    else:
        assert serial.first_bad is not None and serial.problem


async def test_verify_resumes_from_a_checkpoint(db: Database) -> None:
    ids = await write_entries(db, 5)
    await chain.seal_pending(db, db.keyring)
    full = await chain.verify(db, db.keyring, now=T0)
    assert await chain.save_checkpoint(db, db.keyring, full)

    more = await write_entries(db, 3)
    await chain.seal_pending(db, db.keyring)
    resumed = await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)
    assert resumed == chain.VerifyResult(True, 3, None, None, 8, more[-1])  # only the new ones
    assert (await chain.verify(db, db.keyring, now=T0)).checked == 8

    # An entry after the checkpoint edited: named.
    await execute(db, "UPDATE audit_entries SET action = 'x' WHERE id = :id", id=more[1])
    result = await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)
    assert (result.ok, result.first_bad) == (False, more[1])
    await execute(
        db, "UPDATE audit_entries SET action = 'payment.status_changed' WHERE id = :id", id=more[1]
    )
    assert (await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)).ok

    # The entry the checkpoint recorded, edited afterwards: caught.
    await execute(db, "UPDATE audit_entries SET outcome = 'denied' WHERE id = :id", id=ids[-1])
    result = await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)
    assert (result.ok, result.first_bad) == (False, ids[-1])
    assert result.problem is not None and "changed since the checkpoint" in result.problem


async def test_verify_from_a_checkpoint_at_the_head(db: Database) -> None:
    """Nothing sealed since the checkpoint: the checkpointed entry is still re-checked, and the
    head is reported (this crashed: no range to verify)."""
    ids = await write_entries(db, 4)
    await chain.seal_pending(db, db.keyring)
    assert await chain.save_checkpoint(db, db.keyring, await chain.verify(db, db.keyring, now=T0))
    for workers in (1, 2):
        resumed = await chain.verify(
            db, db.keyring, now=T0, from_checkpoint=True, workers=workers, parallel_min=0
        )
        assert resumed == chain.VerifyResult(True, 0, None, None, 4, ids[-1])

    await execute(db, "UPDATE audit_entries SET outcome = 'denied' WHERE id = :id", id=ids[-1])
    result = await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)
    assert (result.ok, result.first_bad) == (False, ids[-1])
    assert result.problem is not None and "changed since the checkpoint" in result.problem


async def test_a_forged_or_moved_checkpoint_is_refused(db: Database) -> None:
    ids = await write_entries(db, 6)
    await chain.seal_pending(db, db.keyring)
    assert await chain.save_checkpoint(db, db.keyring, await chain.verify(db, db.keyring, now=T0))
    table = AuditCheckpoint.__table__

    async def move(session: AsyncSession) -> None:  # claim the chain verified further than it did
        await session.execute(update(table).values(seq=5, entry_id=ids[4]))

    await db.run(move)
    result = await chain.verify(db, db.keyring, now=T0, from_checkpoint=True)
    assert (result.ok, result.first_bad) == (False, ids[4])
    assert result.problem is not None and "checkpoint at seq 5: MAC mismatch" in result.problem


async def test_cli_verify_saves_a_checkpoint_and_resumes_from_it(
    api: Api, container: Container, database_url: str
) -> None:
    entries = await sealed_trail(api, container)
    first = await paysvc(database_url, "audit", "verify", "--workers", "2", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["checked"] == len(entries)

    await api.paid(order_id="after-checkpoint")
    await seal_pending(container.db, container.keyring)
    resumed = await paysvc(database_url, "audit", "verify", "--from-checkpoint", "--json")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    # The entries written since (and the first verify's own), not the whole trail again.
    assert 0 < report["checked"] < len(entries)
    assert report["last_seq"] > entries[-1].seq
