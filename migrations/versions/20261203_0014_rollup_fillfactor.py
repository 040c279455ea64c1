"""rollup fillfactor: room on each page of payment_daily_totals for its updates, and the table
compacted (PostgreSQL)

Every payment insert or change updates a row of the rollup (its trigger). On PostgreSQL each
update writes a new row version; with full pages (fillfactor 100) it goes to another page, a
non-HOT update with a new index entry, and the table grows with dead versions that VACUUM
frees but never gives back: after a million payments it was 84 MB for 46,634 live rows, and a
year's report read all of it (170 ms). Half-full pages let the updates stay on their page
(HOT: no index entry, the dead version pruned on the page); CLUSTER rewrites the table once,
in primary-key (day) order. SQLite updates in place: nothing to do.

Revision ID: rollup_fillfactor
Revises: outbox_events
Create Date: 2026-12-03 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "rollup_fillfactor"
down_revision: str | Sequence[str] | None = "outbox_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE payment_daily_totals SET (fillfactor = 50)")
    # Exclusive lock on the rollup for the rewrite: milliseconds (its size is days x
    # currencies x statuses x shards, not payments); payment writes wait that long.
    op.execute("CLUSTER payment_daily_totals USING pk_payment_daily_totals")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE payment_daily_totals RESET (fillfactor)")
