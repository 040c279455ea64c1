"""payment daily totals: the /admin/transactions rollup, kept by triggers, backfilled

Revision ID: payment_daily_totals
Revises: encryption_keys_in_use
Create Date: 2026-12-03 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_daily_totals"
down_revision: str | Sequence[str] | None = "encryption_keys_in_use"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIGURES = ("count", "attempted", "volume", "captured", "refunded")
WATCHED = "status, amount, amount_captured, amount_refunded, gateway_reference, currency, created_at"
# As paysvc.admin.repository.ATTEMPTED: the payment reached the gateway.
ATTEMPTED = "({r}.status NOT IN ('pending', 'cancelled') OR {r}.gateway_reference IS NOT NULL)"
SHARDS = 8  # PostgreSQL: concurrent writers spread over this many rows per (day, currency, status)


def _add(target: str, sign: str, row: str, day: str, shard: str) -> str:
    """An upsert adding (sign=+) or subtracting (sign=-) `row`'s figures under its key."""
    values = (
        f"{day}, {row}.currency, {row}.status, {shard}, {sign}1, "
        f"{sign}(CASE WHEN {ATTEMPTED.format(r=row)} THEN 1 ELSE 0 END), "
        f"{sign}{row}.amount, {sign}{row}.amount_captured, {sign}{row}.amount_refunded"
    )
    updates = ", ".join(f"{f} = {target}.{f} + excluded.{f}" for f in FIGURES)
    return (
        f"INSERT INTO payment_daily_totals (day, currency, status, shard, {', '.join(FIGURES)}) "
        f"VALUES ({values}) ON CONFLICT (day, currency, status, shard) DO UPDATE SET {updates};"
    )


def upgrade() -> None:
    op.create_table(
        "payment_daily_totals",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in FIGURES),
        sa.PrimaryKeyConstraint(
            "day", "currency", "status", "shard", name=op.f("pk_payment_daily_totals")
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(timezone('UTC', {r}.created_at) AS DATE)"
        shard = f"mod(abs(hashtext({{r}}.id)), {SHARDS})"
        target = "payment_daily_totals"
        old = _add(target, "-", "OLD", day.format(r="OLD"), shard.format(r="OLD"))
        new = _add(target, "+", "NEW", day.format(r="NEW"), shard.format(r="NEW"))
        op.execute(
            f"""
            CREATE FUNCTION payment_daily_totals_keep() RETURNS trigger AS $$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN {old} END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN {new} END IF;
                RETURN NULL;
            END $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"CREATE TRIGGER payment_daily_totals_keep AFTER INSERT OR DELETE OR UPDATE OF "
            f"{WATCHED} ON payments FOR EACH ROW EXECUTE FUNCTION payment_daily_totals_keep()"
        )
        backfill_day, backfill_shard = (
            "CAST(timezone('UTC', created_at) AS DATE)",
            f"mod(abs(hashtext(id)), {SHARDS})",
        )
    else:
        target = "payment_daily_totals"
        old = _add(target, "-", "OLD", "date(OLD.created_at)", "0")
        new = _add(target, "+", "NEW", "date(NEW.created_at)", "0")
        op.execute(
            f"CREATE TRIGGER payment_daily_totals_insert AFTER INSERT ON payments BEGIN {new} END"
        )
        op.execute(
            f"CREATE TRIGGER payment_daily_totals_update AFTER UPDATE OF {WATCHED} ON payments "
            f"BEGIN {old} {new} END"
        )
        op.execute(
            f"CREATE TRIGGER payment_daily_totals_delete AFTER DELETE ON payments BEGIN {old} END"
        )
        backfill_day, backfill_shard = "date(created_at)", "0"
    op.execute(
        f"""
        INSERT INTO payment_daily_totals (day, currency, status, shard, {", ".join(FIGURES)})
        SELECT {backfill_day}, currency, status, {backfill_shard}, count(*),
               sum(CASE WHEN {ATTEMPTED.format(r="payments")} THEN 1 ELSE 0 END),
               sum(amount), sum(amount_captured), sum(amount_refunded)
        FROM payments GROUP BY 1, 2, 3, 4
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER payment_daily_totals_keep ON payments")
        op.execute("DROP FUNCTION payment_daily_totals_keep()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER payment_daily_totals_{event}")
    op.drop_table("payment_daily_totals")
