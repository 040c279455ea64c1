"""Every model, imported once so that the metadata is complete (Alembic, tests)."""

from paysvc.audit.models import AuditEntry
from paysvc.db.base import Base
from paysvc.disputes.models import Dispute
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.idempotency.models import IdempotencyKey
from paysvc.operations.models import Operation
from paysvc.payments.models import Payment, PaymentEvent
from paysvc.refunds.models import Refund
from paysvc.webhooks.models import WebhookEvent

metadata = Base.metadata

__all__ = [
    "AuditEntry",
    "Dispute",
    "IdempotencyKey",
    "Operation",
    "Payment",
    "PaymentEvent",
    "Refund",
    "SandboxCharge",
    "SandboxRefund",
    "WebhookEvent",
    "metadata",
]
