"""webhook payloads encrypted at rest

Revision ID: webhook_payload_enc
Revises: payment_daily_totals
Create Date: 2026-12-03 13:30:00

`webhook_events.payload` (Stripe's JSON as received: client secrets, receipt emails, billing
details) becomes `payload_enc`, AES-GCM encrypted and bound to its row like every other
encrypted column. Existing payloads are encrypted here, which needs the service keys: run it
through `paysvc db upgrade` or `paysvc serve` (they pass the keyring); a bare `alembic upgrade`
refuses when there are rows to convert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from paysvc.keys.keyring import Keyring

revision: str = "webhook_payload_enc"
down_revision: str | Sequence[str] | None = "payment_daily_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS_IN_USE = sa.table(
    "encryption_keys_in_use", sa.column("key_id", sa.String), sa.column("since", sa.DateTime)
)
EVENTS = sa.table(
    "webhook_events",
    sa.column("id", sa.String),
    sa.column("payload", sa.Text),
    sa.column("payload_enc", sa.Text),
)


def _associated(event_id: str) -> str:
    return f"webhook_events.payload.{event_id}"  # as paysvc.db.encrypted binds the value


def _keyring(rows: int) -> Keyring:
    keyring = context.config.attributes.get("keyring")
    if not isinstance(keyring, Keyring):
        raise RuntimeError(
            f"{rows} webhook payload(s) to convert need the encryption keys: "
            "run `paysvc db upgrade` (or `paysvc serve`) with ENCRYPTION_KEY set"
        )
    return keyring


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload_enc", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(EVENTS.c.id, EVENTS.c.payload)).all()
    if rows:
        keyring = _keyring(len(rows))
        for event_id, payload in rows:
            bind.execute(
                EVENTS.update()
                .where(EVENTS.c.id == event_id)
                .values(payload_enc=keyring.encrypt(payload, _associated(event_id)))
            )
        # Stored data is now under this key: on the record of keys in use (keys status).
        known = bind.execute(
            sa.select(KEYS_IN_USE.c.key_id).where(KEYS_IN_USE.c.key_id == keyring.active_id)
        ).first()
        if known is None:
            bind.execute(
                KEYS_IN_USE.insert().values(
                    key_id=keyring.active_id, since=dt.datetime.now(dt.UTC)
                )
            )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("payload")


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(EVENTS.c.id, EVENTS.c.payload_enc)).all()
    if rows:
        keyring = _keyring(len(rows))
        for event_id, envelope in rows:
            plain = "{}" if envelope is None else keyring.decrypt(envelope, _associated(event_id))
            bind.execute(EVENTS.update().where(EVENTS.c.id == event_id).values(payload=plain))
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("payload_enc")
