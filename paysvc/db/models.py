"""Every model, imported once so that the metadata is complete (Alembic, tests)."""

from paysvc.audit.models import AuditEntry
from paysvc.db.base import Base
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.idempotency.models import IdempotencyKey
from paysvc.payments.models import Payment, PaymentEvent

metadata = Base.metadata

__all__ = [
    "AuditEntry",
    "IdempotencyKey",
    "Payment",
    "PaymentEvent",
    "SandboxCharge",
    "SandboxRefund",
    "metadata",
]
