"""3-D Secure: requires_action holds the order, next_action, the sandbox's challenges

Revision ID: 0008_3ds
Revises: 0007
Create Date: 2026-12-03 13:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_3ds"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_HOLD = "status IN ('authorized', 'captured', 'partially_refunded', 'processing')"
_NEW_HOLD = (
    "status IN ('authorized', 'captured', 'partially_refunded', 'processing', "
    "'requires_action')"
)


def _live_order_index(batch_op: object, where: str) -> None:
    batch_op.create_index(  # type: ignore[attr-defined]
        "uq_payments_live_order",
        ["order_id"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_action_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("return_url", sa.String(length=2048), nullable=True))
        batch_op.drop_index("uq_payments_live_order")
        _live_order_index(batch_op, _NEW_HOLD)
    with op.batch_alter_table("sandbox_charges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capture_method", sa.String(length=12), nullable=True))
    op.create_table(
        "sandbox_authentications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("charge_reference", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_enc", sa.Text(), nullable=True),
        sa.Column("return_url", sa.String(length=2048), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_authentications")),
        sa.UniqueConstraint(
            "charge_reference", name=op.f("uq_sandbox_authentications_charge_reference")
        ),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sandbox_authentications_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("sandbox_authentications")
    with op.batch_alter_table("sandbox_charges", schema=None) as batch_op:
        batch_op.drop_column("capture_method")
    op.execute(
        "UPDATE payments SET status = 'pending', next_action_enc = NULL "
        "WHERE status = 'requires_action'"
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("uq_payments_live_order")
        _live_order_index(batch_op, _OLD_HOLD)
        batch_op.drop_column("return_url")
        batch_op.drop_column("next_action_enc")
