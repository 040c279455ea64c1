"""rollup compact: payment_daily_totals rewritten once, without the dead row versions a bulk
load left (PostgreSQL)

Every payment insert or change updates a row of the rollup (its trigger), and on PostgreSQL
each update writes a new row version. Payments written one per transaction (the service) leave
little behind: the old version is pruned on its page (measured: 97 % of 30,000 such updates
were HOT, the table did not grow). Payments written thousands per transaction (an import, a
backfill, `scripts/bench_growth`) cannot be pruned until the transaction ends: a million
payments loaded 5,000 per transaction left the rollup at 84 MB for 46,634 live rows (8.6 MB
rewritten), and VACUUM frees that space without giving it back, so a year's report read all
of it (a year by day: 170 ms instead of 40). CLUSTER rewrites the table in primary-key (day)
order; run `CLUSTER payment_daily_totals` again after any such bulk load. SQLite updates rows
in place: nothing to do.

Revision ID: rollup_compact
Revises: outbox_events
Create Date: 2026-12-03 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "rollup_compact"
down_revision: str | Sequence[str] | None = "outbox_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # An exclusive lock on the rollup for the rewrite: milliseconds (its size is days x
        # currencies x statuses x shards, not payments); payment writes wait that long.
        op.execute("CLUSTER payment_daily_totals USING pk_payment_daily_totals")


def downgrade() -> None:
    pass  # nothing to undo: the same rows, rewritten
