"""operations replace the in-flight markers on payments and refunds

Idempotency-Key rows gain `resource_id`: what the first attempt created in its phase 1.

Open work is carried over into the ledger: a payment with `pending_operation` (or in
`processing`) and every `pending` refund becomes a `pending` operation, due for the completer
at once. Each carried-over operation keeps the gateway idempotency key its call was made
with as its id (`pay_…-confirm-N`, `pay_…-capture`, `pay_…-cancel`, `re_…`), so the
completer re-sends it under the same key, never a new one. Then `payments.pending_operation`,
`pending_since`, `confirm_attempts` and `refunds.pending_since` go.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:10:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = "'authorized', 'captured', 'partially_refunded', 'processing'"
_OLD_WHERE = f"status IN ({_LIVE}) OR pending_operation = 'confirm'"
_NEW_WHERE = f"status IN ({_LIVE})"

_operations = sa.table(
    'operations',
    sa.column('id', sa.String), sa.column('payment_id', sa.String), sa.column('kind', sa.String),
    sa.column('amount', sa.BigInteger), sa.column('currency', sa.String),
    sa.column('status', sa.String), sa.column('attempts', sa.Integer),
    sa.column('gateway', sa.String), sa.column('gateway_reference', sa.String),
    sa.column('refund_id', sa.String), sa.column('last_error', sa.String),
    sa.column('next_check_at', sa.DateTime(timezone=True)),
    sa.column('created_at', sa.DateTime(timezone=True)),
    sa.column('updated_at', sa.DateTime(timezone=True)),
)


def _carry_over() -> None:
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    rows = []
    payments = bind.execute(sa.text(
        "SELECT id, amount, currency, amount_capturable, capture_method, gateway, "
        "gateway_reference, pending_operation, pending_since, confirm_attempts, status "
        "FROM payments WHERE pending_operation IS NOT NULL OR status = 'processing'"
    )).mappings()
    for p in payments:
        operation = p['pending_operation'] or 'confirm'
        if operation == 'confirm':
            key = f"{p['id']}-confirm-{max(p['confirm_attempts'], 1)}"
            kind = 'authorize' if p['capture_method'] == 'manual' else 'charge'
            amount = p['amount']
        else:
            key = f"{p['id']}-{operation}"
            kind = 'capture' if operation == 'capture' else 'void'
            amount = p['amount_capturable']
        since = p['pending_since'] or now
        rows.append({
            'id': key, 'payment_id': p['id'], 'kind': kind, 'amount': amount,
            'currency': p['currency'], 'status': 'pending', 'attempts': 1,
            'gateway': p['gateway'],
            'gateway_reference': None if kind in ('authorize', 'charge') else p['gateway_reference'],
            'refund_id': None, 'last_error': 'carried over from the payment marker',
            'next_check_at': since, 'created_at': since, 'updated_at': now,
        })
    refunds = bind.execute(sa.text(
        "SELECT r.id, r.payment_id, r.amount, r.currency, r.gateway_reference, r.pending_since, "
        "r.created_at, p.gateway FROM refunds r JOIN payments p ON p.id = r.payment_id "
        "WHERE r.status = 'pending'"
    )).mappings()
    for r in refunds:
        since = r['pending_since'] or r['created_at']
        rows.append({
            'id': r['id'], 'payment_id': r['payment_id'], 'kind': 'refund', 'amount': r['amount'],
            'currency': r['currency'], 'status': 'pending', 'attempts': 1,
            'gateway': r['gateway'], 'gateway_reference': r['gateway_reference'],
            'refund_id': r['id'], 'last_error': 'carried over from the pending refund',
            'next_check_at': since, 'created_at': r['created_at'], 'updated_at': now,
        })
    if rows:
        op.bulk_insert(_operations, rows)


def upgrade() -> None:
    _carry_over()
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('uq_payments_live_order', sqlite_where=sa.text(_OLD_WHERE), postgresql_where=sa.text(_OLD_WHERE))
        batch_op.drop_column('pending_operation')
        batch_op.drop_column('pending_since')
        batch_op.drop_column('confirm_attempts')
        batch_op.create_index('uq_payments_live_order', ['order_id'], unique=True, sqlite_where=sa.text(_NEW_WHERE), postgresql_where=sa.text(_NEW_WHERE))
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index('ix_refunds_status_pending_since')
        batch_op.drop_column('pending_since')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resource_id', sa.String(length=40), nullable=True))


def downgrade() -> None:
    # The markers come back empty: finish open operations (paysvc reconcile --apply) first.
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_column('resource_id')
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_refunds_status_pending_since', ['status', 'pending_since'], unique=False)
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('uq_payments_live_order', sqlite_where=sa.text(_NEW_WHERE), postgresql_where=sa.text(_NEW_WHERE))
        batch_op.add_column(sa.Column('confirm_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('pending_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pending_operation', sa.String(length=16), nullable=True))
        batch_op.create_index('uq_payments_live_order', ['order_id'], unique=True, sqlite_where=sa.text(_OLD_WHERE), postgresql_where=sa.text(_OLD_WHERE))
