"""Every model, imported once so that the metadata is complete (Alembic, tests)."""

from paysvc.admin.models import PaymentDailyTotal
from paysvc.audit.models import AuditCheckpoint, AuditEntry
from paysvc.db.base import Base
from paysvc.disputes.models import Dispute
from paysvc.events.models import Event, EventAttempt, EventDelivery
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.idempotency.models import IdempotencyKey
from paysvc.keys.models import KeyHolder, KeyInUse
from paysvc.operations.models import Operation
from paysvc.orders.models import OrderCancellation
from paysvc.payments.models import Payment, PaymentEvent
from paysvc.refunds.models import Refund
from paysvc.webhooks.models import WebhookEvent

metadata = Base.metadata

__all__ = [
    "AuditCheckpoint",
    "AuditEntry",
    "Dispute",
    "Event",
    "EventAttempt",
    "EventDelivery",
    "IdempotencyKey",
    "KeyHolder",
    "KeyInUse",
    "Operation",
    "OrderCancellation",
    "Payment",
    "PaymentDailyTotal",
    "PaymentEvent",
    "Refund",
    "SandboxCharge",
    "SandboxRefund",
    "WebhookEvent",
    "metadata",
]
