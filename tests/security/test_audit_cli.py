"""`paysvc audit verify|export` and the CLI's own entries, on the database the app serves."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.chain import seal_pending
from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from tests.conftest import SERVICE, Api
from tests.security.helpers import error_lines, paysvc


async def sealed_trail(api: Api, container: Container) -> list[AuditEntry]:
    """A few payments and refunds, every entry sealed; the entries in chain order."""
    for i in range(3):
        payment = await api.paid(order_id=f"o{i}")
        await api.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, 201)
    await seal_pending(container.db, container.keyring)
    async with container.db.transaction(write=False) as session:
        entries = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert entries and all(e.seq is not None for e in entries)
    return entries


async def execute(container: Container, sql: str, **params: object) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(text(sql), params)

    await container.db.run(work)


async def test_verify_an_empty_trail(database_url: str) -> None:
    result = await paysvc(database_url, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "0 entries verified; nothing sealed yet"


async def test_verify_a_clean_trail(api: Api, container: Container, database_url: str) -> None:
    entries = await sealed_trail(api, container)
    result = await paysvc(database_url, "audit", "verify")
    assert result.exit_code == 0, result.output
    last = entries[-1]
    assert result.stdout.strip() == (
        f"{len(entries)} entries verified; last seq {last.seq} id {last.id}"
    )
    as_json = await paysvc(database_url, "audit", "verify", "--json")
    assert json.loads(as_json.stdout) == {
        "ok": True,
        "checked": len(entries),
        "first_bad": None,
        "problem": None,
        "last_seq": last.seq,
        "last_id": last.id,
    }


async def assert_named(database_url: str, entry_id: str, problem: str) -> None:
    result = await paysvc(database_url, "audit", "verify")
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result)
    assert line.startswith(f"error: audit entry {entry_id} failed verification: ")
    assert problem in line
    as_json = await paysvc(database_url, "audit", "verify", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["first_bad"] == entry_id


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("outcome", "denied"),
        ("actor_id", "someone-else"),
        ("details", '{"amount": 1}'),
        ("resource_id", "pay_other"),
    ],
)
async def test_an_edited_row_is_named(
    api: Api, container: Container, database_url: str, column: str, value: str
) -> None:
    entries = await sealed_trail(api, container)
    victim = entries[len(entries) // 2]
    edit = f"UPDATE audit_entries SET {column} = :v WHERE id = :id"  # noqa: S608 (fixed names)
    await execute(container, edit, v=value, id=victim.id)
    await assert_named(database_url, victim.id, "MAC mismatch")


async def test_a_deleted_row_is_pointed_at(
    api: Api, container: Container, database_url: str
) -> None:
    entries = await sealed_trail(api, container)
    victim, following = entries[2], entries[3]
    await execute(container, "DELETE FROM audit_entries WHERE id = :id", id=victim.id)
    await assert_named(database_url, following.id, f"gap in the chain: expected seq {victim.seq}")


async def test_an_inserted_row_is_named(api: Api, container: Container, database_url: str) -> None:
    entries = await sealed_trail(api, container)
    template = entries[0]
    columns = [c.name for c in AuditEntry.__table__.columns]
    row: dict[str, Any] = {c: getattr(template, c) for c in columns}
    # a forged entry, as sealed as it can look without the key: the next seq, a borrowed MAC
    row.update(id="aud_forged", seq=entries[-1].seq + 1, action="payment.captured")
    insert = (
        f"INSERT INTO audit_entries ({', '.join(columns)}) "  # noqa: S608 (model columns)
        f"VALUES ({', '.join(':' + c for c in columns)})"
    )
    await execute(container, insert, **row)
    await assert_named(database_url, "aud_forged", "MAC mismatch")

    unsealed = {**row, "id": "aud_forged_unsealed", "seq": None}
    await execute(container, "DELETE FROM audit_entries WHERE id = 'aud_forged'")
    await execute(container, insert, **unsealed)
    await assert_named(database_url, "aud_forged_unsealed", "inserted or edited outside")


def exported_since(entries: list[AuditEntry]) -> str:
    return entries[2].occurred_at.replace(tzinfo=dt.UTC).isoformat()


async def test_export_jsonl_and_csv(
    api: Api, container: Container, database_url: str, tmp_path: Path
) -> None:
    entries = await sealed_trail(api, container)
    jsonl = await paysvc(database_url, "audit", "export")
    assert jsonl.exit_code == 0, jsonl.output
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["id"] for r in records] == [e.id for e in entries]  # oldest first
    first = records[0]
    assert set(first) == {
        "seq",
        "id",
        "occurred_at",
        "actor_id",
        "actor_role",
        "action",
        "resource_type",
        "resource_id",
        "outcome",
        "origin",
        "request_id",
        "details",
        "mac",
    }
    assert isinstance(first["details"], dict) and first["occurred_at"].endswith("Z")

    target = tmp_path / "audit.csv"
    since = exported_since(entries)
    written = await paysvc(
        database_url,
        "audit",
        "export",
        "--format",
        "csv",
        "--since",
        since,
        "--output",
        str(target),
    )
    assert written.exit_code == 0, written.output
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    expected = [e for e in entries if e.occurred_at >= entries[2].occurred_at]
    assert [r["id"] for r in rows[:-1]] == [e.id for e in expected]
    assert rows[-1]["action"] == "audit.export"  # the first export, itself on the trail
    assert f"exported {len(rows)} entries to {target}" in written.stdout
    assert rows[0]["seq"] == str(expected[0].seq)
    assert json.loads(rows[0]["details"]) == json.loads(expected[0].details)

    window = await paysvc(database_url, "audit", "export", "--since", "1h", "--until", "2000-01-01")
    assert window.exit_code == 0 and window.stdout == ""
    bad = await paysvc(database_url, "audit", "export", "--since", "last tuesday")
    assert bad.exit_code == 2

    async with container.db.transaction(write=False) as session:
        exports = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export"))
        )
    assert len(exports) == 3  # every export (and its range) is itself on the trail
    assert {json.loads(e.details)["format"] for e in exports} == {"jsonl", "csv"}
    assert all(e.actor_id.startswith("operator:") and e.origin.startswith("cli:") for e in exports)
    assert all(e.seq is not None for e in exports)


async def test_cli_refunds_are_audited(api: Api, container: Container, database_url: str) -> None:
    payment = await api.paid()
    result = await paysvc(
        database_url, "refunds", "create", payment["id"], "--amount", "100", "--yes"
    )
    assert result.exit_code == 0, result.output
    async with container.db.transaction(write=False) as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.actor_id.like("operator:%")))
        )
    assert {e.action for e in entries} == {
        "refund.created",
        "refund.succeeded",
        "payment.partially_refunded",
    }
    assert all(e.actor_role == "admin" and e.origin.startswith("cli:") for e in entries)
    assert len({e.request_id for e in entries}) == 1
    assert all(e.seq is not None for e in entries)  # the command sealed what it wrote
    verified = await paysvc(database_url, "audit", "verify")
    assert verified.exit_code == 0, verified.output
