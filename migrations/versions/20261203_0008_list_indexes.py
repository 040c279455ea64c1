"""list indexes: (status, created_at, id) for payments, audit filters with their keyset order

Revision ID: list_indexes
Revises: 0008_3ds
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "list_indexes"
down_revision: str | Sequence[str] | None = "0008_3ds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every list walks (created_at, id) newest first within its filter: the filter column leads.
    op.drop_index("ix_payments_status", table_name="payments")
    op.create_index("ix_payments_status_created", "payments", ["status", "created_at", "id"])
    op.drop_index("ix_audit_entries_resource", table_name="audit_entries")
    op.drop_index("ix_audit_entries_actor", table_name="audit_entries")
    op.create_index(
        "ix_audit_entries_resource_occurred", "audit_entries", ["resource_id", "occurred_at", "id"]
    )
    op.create_index(
        "ix_audit_entries_actor_occurred", "audit_entries", ["actor_id", "occurred_at", "id"]
    )


    op.drop_index("ix_disputes_payment_id", table_name="disputes")
    op.create_index("ix_disputes_payment_created", "disputes", ["payment_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_disputes_payment_created", table_name="disputes")
    op.create_index("ix_disputes_payment_id", "disputes", ["payment_id"])
    op.drop_index("ix_audit_entries_actor_occurred", table_name="audit_entries")
    op.drop_index("ix_audit_entries_resource_occurred", table_name="audit_entries")
    op.create_index("ix_audit_entries_actor", "audit_entries", ["actor_id"])
    op.create_index("ix_audit_entries_resource", "audit_entries", ["resource_id"])
    op.drop_index("ix_payments_status_created", table_name="payments")
    op.create_index("ix_payments_status", "payments", ["status"])
