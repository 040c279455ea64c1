"""Webhook payloads are encrypted at rest (Stripe's JSON holds client secrets, receipt emails,
billing names and addresses), still applied (also later, when pending), covered by key rotation,
and existing rows are converted by the migration."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from alembic.script import ScriptDirectory
from sqlalchemy import text

from paysvc.bootstrap import Container
from paysvc.db import migrate
from paysvc.db.engine import Database, create_engine
from paysvc.keys import service as keys
from paysvc.keys.keyring import Keyring
from paysvc.webhooks.models import WebhookEvent
from tests.conftest import Api
from tests.security.helpers import raw_database
from tests.stripe_events import deliver, dispute, event, intent, ledger_reference
from tests.support import rows
from tests.test_migrations import empty_url

__all__ = ["empty_url"]  # the fixture

PERSONAL = {
    "client_secret": "pi_3Ab_secret_Zq9Xk2LmNoPqRsTu",
    "receipt_email": "jane.roe@example.org",
    "shipping": {
        "name": "Jane Roe",
        "address": {"line1": "17 Quiet Lane", "city": "Springfield", "postal_code": "49007"},
    },
}
CLEAR = [b"pi_3Ab_secret_Zq9Xk2LmNoPqRsTu", b"jane.roe@example.org", b"Jane Roe", b"Quiet Lane"]


def with_personal_data(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, **PERSONAL}


async def test_payloads_are_encrypted_and_a_pending_event_applies_later(
    api: Api, client: TestClient[Any, Any], container: Container, database_url: str
) -> None:
    payment = await api.paid("pm_card_timeout")  # the gateway's answer was lost: processing
    reference = await ledger_reference(container, payment["id"])
    # Only the gateway's reference, which we do not know yet: stored pending.
    waiting = event("charge.dispute.created", with_personal_data(dispute("dp_1", reference)))
    assert (await deliver(client, waiting))["status"] == "pending"
    other = await api.create(order_id="other")
    cancelled = event(
        "payment_intent.canceled",
        with_personal_data(intent("pi_other", "canceled", payment_id=other["id"])),
    )
    assert (await deliver(client, cancelled))["status"] == "applied"

    stored = await raw_database(database_url)
    for value in CLEAR:
        assert value not in stored
    records = {r.id: r for r in await rows(container, WebhookEvent)}
    assert set(records) == {waiting["id"], cancelled["id"]}
    for record in records.values():
        assert record.payload_enc.startswith(f"v1:{container.keyring.active_id}:")
    assert json.loads(records[waiting["id"]].payload) == waiting  # decrypts to what was sent

    # The reconciler finds the payment and applies the waiting event from its stored payload.
    report = await container.reconcile.run_once()
    assert report.webhooks_applied == 1
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured" and settled["disputed"] is True
    assert (await api.get(f"/payments/{other['id']}"))["status"] == "cancelled"


async def test_key_rotation_re_encrypts_webhook_payloads(
    api: Api, client: TestClient[Any, Any], container: Container, database_url: str
) -> None:
    payment = await api.create()
    payload = event(
        "payment_intent.canceled",
        with_personal_data(intent("pi_rot", "canceled", payment_id=payment["id"])),
    )
    await deliver(client, payload)
    old = container.keyring
    new_key = secrets.token_bytes(32)
    rotated = Database(database_url, Keyring(new_key, retired=(b"k" * 32,)))  # conftest's key
    try:
        assert old.active_id in await keys.status(rotated)
        await keys.rotate(rotated)
        counts = await keys.status(rotated)
        assert set(counts) == {rotated.keyring.active_id}
        async with rotated.transaction(write=False) as session:
            record = await session.get(WebhookEvent, payload["id"])
            assert record is not None
            assert record.payload_enc.startswith(f"v1:{rotated.keyring.active_id}:")
            assert json.loads(record.payload) == payload
    finally:
        await rotated.dispose()


async def _sql(url: str, statement: str, **params: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return result.scalar_one() if result.returns_rows else None
    finally:
        await engine.dispose()


def test_the_migration_encrypts_existing_payloads(empty_url: str) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(empty_url))
    before = str(script.get_revision("webhook_payload_enc").down_revision)
    migrate.upgrade(empty_url, before)  # the schema before this change
    body = json.dumps({"id": "evt_old", "data": {"object": PERSONAL}})
    asyncio.run(
        _sql(
            empty_url,
            "INSERT INTO webhook_events (id, source, type, payload, status, attempts, "
            "received_at) VALUES ('evt_old', 'stripe', 'payment_intent.succeeded', :p, "
            "'pending', 0, :at)",
            p=body,
            at=dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC),
        )
    )
    with pytest.raises(RuntimeError, match="need the encryption keys"):
        migrate.upgrade(empty_url)  # a bare upgrade cannot encrypt: refuses, changes nothing
    assert migrate.current(empty_url).startswith(before)
    keyring = Keyring(secrets.token_bytes(32))
    # As `paysvc serve` migrates: in a child process, the keys passed to it by environment.
    migrate.upgrade_in_subprocess(empty_url, keyring)
    envelope = asyncio.run(_sql(empty_url, "SELECT payload_enc FROM webhook_events"))
    assert keyring.decrypt(envelope, "webhook_events.payload.evt_old") == body
    in_use = asyncio.run(_sql(empty_url, "SELECT key_id FROM encryption_keys_in_use"))
    assert in_use == keyring.active_id
    assert "jane.roe" not in envelope

    migrate.downgrade(empty_url, before, keyring=keyring)
    assert asyncio.run(_sql(empty_url, "SELECT payload FROM webhook_events")) == body
