"""The audit head anchor: entries cut off the end of the chain pass `verify` on their own, but not
`verify --expect-head` against a head recorded earlier; the sealer publishes the head after each
seal (JSON log field `audit_head`, gauge `paysvc_audit_head_sequence`)."""

from __future__ import annotations

import asyncio
import json
import time

from prometheus_client import REGISTRY

from paysvc.audit import chain
from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from tests.conftest import SERVICE, Api
from tests.security.helpers import captured_logs, error_lines, log_lines, paysvc
from tests.security.test_audit_cli import execute, sealed_trail


async def recorded_head(database_url: str) -> tuple[str, str]:
    """What an operator's cron job appends to its outside record: `SEQ:ID` and the MAC."""
    result = await paysvc(database_url, "audit", "head")
    assert result.exit_code == 0, result.output
    head, mac = result.stdout.split()
    return head, mac


async def test_head_prints_the_newest_sealed_entry(
    api: Api, container: Container, database_url: str
) -> None:
    empty = await paysvc(database_url, "audit", "head")
    assert empty.exit_code == 1
    assert error_lines(empty) == ["error: no sealed audit entry yet"]

    entries = await sealed_trail(api, container)
    last = entries[-1]
    head, mac = await recorded_head(database_url)
    assert (head, mac) == (f"{last.seq}:{last.id}", last.mac)
    as_json = await paysvc(database_url, "audit", "head", "--json")
    assert json.loads(as_json.stdout) == {
        "head": head,
        "seq": last.seq,
        "id": last.id,
        "mac": last.mac,
    }
    ok = await paysvc(database_url, "audit", "verify", "--expect-head", head)
    assert ok.exit_code == 0, ok.output


async def test_tail_truncation_is_caught_against_the_recorded_head(
    api: Api, container: Container, database_url: str
) -> None:
    entries = await sealed_trail(api, container)
    head, _ = await recorded_head(database_url)
    # Someone with database access deletes the newest entries; new activity is sealed from the
    # cut, so the chain is whole again, with the same last seq and a different id.
    cut = entries[-2:]
    await execute(
        container, "DELETE FROM audit_entries WHERE id IN (:a, :b)", a=cut[0].id, b=cut[1].id
    )
    payment = await api.paid(order_id="after-the-cut")
    await api.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, 201)
    await chain.seal_pending(container.db, container.keyring)

    alone = await paysvc(database_url, "audit", "verify")
    assert alone.exit_code == 0, alone.output  # what the chain cannot see on its own

    anchored = await paysvc(database_url, "audit", "verify", "--expect-head", head)
    assert anchored.exit_code == 1
    (line,) = error_lines(anchored)
    assert f"audit entry {cut[-1].id} failed verification" in line
    assert "not the expected head" in line or "is missing" in line
    as_json = await paysvc(database_url, "audit", "verify", "--expect-head", head, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["first_bad"] == cut[-1].id


async def test_a_head_beyond_the_end_is_missing(
    api: Api, container: Container, database_url: str
) -> None:
    entries = await sealed_trail(api, container)
    head, _ = await recorded_head(database_url)
    await execute(container, "DELETE FROM audit_entries WHERE id = :id", id=entries[-1].id)
    result = await paysvc(database_url, "audit", "verify", "--expect-head", head)
    assert result.exit_code == 1
    assert "is missing" in error_lines(result)[0]


async def test_expect_head_must_be_seq_colon_id(database_url: str) -> None:
    for bad in ("12", "x:aud_1", "0:aud_1", "3:pay_1"):
        result = await paysvc(database_url, "audit", "verify", "--expect-head", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert "--expect-head" in error_lines(result)[0]


async def test_the_sealer_publishes_the_head(api: Api, container: Container) -> None:
    with captured_logs() as logs:
        await api.paid(order_id="published")
        deadline = time.monotonic() + 120
        published: list[str] = []
        while not published and time.monotonic() < deadline:
            published = [line["audit_head"] for line in log_lines(logs) if "audit_head" in line]
            await asyncio.sleep(0.05)
    newest = await chain.head(container.db)
    assert newest is not None
    assert published, "the sealer logged no audit_head"
    seq, entry_id = chain.parse_head(published[-1])
    async with container.db.transaction(write=False) as session:
        entry = await session.get(AuditEntry, entry_id)
    assert entry is not None and entry.seq == seq
    assert REGISTRY.get_sample_value("paysvc_audit_head_sequence") >= seq >= 1
