"""encryption keys in use and the instances holding keys (cheap start-up check, rolling rotation)

Revision ID: encryption_keys_in_use
Revises: audit_checkpoints
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "encryption_keys_in_use"
down_revision: str | Sequence[str] | None = "audit_checkpoints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    keys = op.create_table(
        "encryption_keys_in_use",
        sa.Column("key_id", sa.String(length=12), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_encryption_keys_in_use")),
    )
    op.create_table(
        "encryption_key_holders",
        sa.Column("instance_id", sa.String(length=96), nullable=False),
        sa.Column("active_key_id", sa.String(length=12), nullable=False),
        sa.Column("readable_key_ids", sa.String(length=500), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_encryption_key_holders")),
    )
    # Backfill: the key ids of every value stored so far ("v1:<key id>:…" in the *_enc columns)
    # and of every audit MAC ("<key id>:…"). One scan, here, instead of one at every start.
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    found: set[str] = set()
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            name = column["name"]
            if name.endswith("_enc"):
                query = f'SELECT DISTINCT substr("{name}", 4, 12) FROM "{table}" WHERE "{name}" IS NOT NULL'  # noqa: E501, S608 - names from the schema
                found |= {row[0] for row in bind.execute(sa.text(query))}
    found |= {
        row[0]
        for row in bind.execute(
            sa.text("SELECT DISTINCT substr(mac, 1, 12) FROM audit_entries WHERE mac IS NOT NULL")
        )
    }
    now = dt.datetime.now(dt.UTC)
    if found:
        op.bulk_insert(keys, [{"key_id": key_id, "since": now} for key_id in sorted(found)])


def downgrade() -> None:
    op.drop_table("encryption_key_holders")
    op.drop_table("encryption_keys_in_use")
