"""Build the container (settings, database, gateways, keyring, clock, services).

Used by the HTTP app, the CLI and the tests alike, so all three run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from paysvc.admin.service import AdminService
from paysvc.audit.service import AuditLog
from paysvc.audit.trail import AuditTrail
from paysvc.auth.tokens import TokenVerifier
from paysvc.clock import Clock, SystemClock
from paysvc.config import Settings
from paysvc.db.engine import Database
from paysvc.disputes.service import DisputeService
from paysvc.events.outbox import Outbox, enabled_destinations
from paysvc.events.service import EventService
from paysvc.gateways.base import Gateway
from paysvc.gateways.failover import FailoverGateway
from paysvc.gateways.instrumented import InstrumentedGateway
from paysvc.gateways.registry import Gateways
from paysvc.gateways.sandbox import SandboxGateway
from paysvc.idempotency.service import IdempotencyService
from paysvc.keys.keyring import Keyring
from paysvc.metrics import Metrics
from paysvc.operations.completer import Completer
from paysvc.operations.service import Ledger
from paysvc.orders.service import OrderService
from paysvc.orders.validation import OrderValidator
from paysvc.payments.service import ConfirmFollowUp, PaymentService
from paysvc.reconcile.service import ReconcileService
from paysvc.refunds.service import RefundService
from paysvc.webhooks.service import WebhookService


@dataclass
class Container:
    settings: Settings
    clock: Clock
    keyring: Keyring
    db: Database
    gateways: Gateways
    audit: AuditLog
    tokens: TokenVerifier
    payments: PaymentService
    refunds: RefundService
    disputes: DisputeService
    webhooks: WebhookService
    completer: Completer
    reconcile: ReconcileService
    idempotency: IdempotencyService
    admin: AdminService
    audit_trail: AuditTrail
    metrics: Metrics
    outbox: Outbox
    events: EventService
    orders: OrderService

    async def close(self) -> None:
        await self.gateways.close()
        await self.db.dispose()


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    wrap_gateway: Callable[[Gateway], Gateway] | None = None,
) -> Container:
    """`wrap_gateway` decorates each configured gateway (tests inject faults with it)."""
    clock = clock or SystemClock()
    keyring = Keyring(
        settings.encryption_key, settings.encryption_keys_retired, settings.encryption_keys_next
    )
    db = Database(settings.database_url, keyring)
    metrics = Metrics()
    gateways = _gateways(settings, db, clock, metrics, wrap_gateway)
    audit = AuditLog(clock)
    timing = settings.timing
    ledger = Ledger(gateways, clock, timing)
    outbox = Outbox(
        clock,
        enabled_destinations(settings.events_destinations, settings.notification_service_url),
    )
    payments = PaymentService(db, gateways, clock, audit, ledger, outbox, metrics)
    if settings.order_validation == "strict":
        payments.order_validator = OrderValidator(settings.order_payable_statuses)
    refunds = RefundService(db, gateways, clock, audit, payments)
    payments.refund_remainder = refunds.refund_remainder  # cancel with refund_if_captured
    payments.refund_projector = refunds.project  # the projection of refund operations
    completer = Completer(db, ledger, payments, clock)
    disputes = DisputeService(db, payments, clock, audit)
    webhooks = WebhookService(
        db, settings.stripe_webhook_secrets, clock, audit, payments, disputes, refunds, metrics
    )
    # Webhooks that arrived before their payment had a gateway reference apply right away.
    payments.confirm_followups.append(
        ConfirmFollowUp(webhooks.waiting_for, webhooks.retry_for_payment, webhooks.settling)
    )
    orders = OrderService(db, clock, audit, payments, refunds)
    # A confirm that settles a payment of a cancelled order releases the money again at once;
    # after every applying completer pass, so are those whose operations it settled.
    payments.confirm_followups.append(ConfirmFollowUp(orders.cancelled, orders.settle_payment))
    reconcile = ReconcileService(
        db, gateways, payments, webhooks, clock, refunds, completer, metrics
    )
    reconcile.after_completion.append(orders.settle_cancelled)
    return Container(
        settings=settings,
        clock=clock,
        keyring=keyring,
        db=db,
        gateways=gateways,
        audit=audit,
        tokens=TokenVerifier(settings.jwt_secret_key, settings.jwt_issuer, settings.jwt_audience),
        payments=payments,
        refunds=refunds,
        disputes=disputes,
        webhooks=webhooks,
        completer=completer,
        reconcile=reconcile,
        idempotency=IdempotencyService(db, clock, audit, stale_after=timing.idempotency_takeover),
        admin=AdminService(db, payments, clock, audit),
        audit_trail=AuditTrail(db, audit),
        outbox=outbox,
        events=EventService(db, clock, audit, outbox),
        orders=orders,
        metrics=metrics,
    )


def _gateways(
    settings: Settings,
    db: Database,
    clock: Clock,
    metrics: Metrics,
    wrap: Callable[[Gateway], Gateway] | None,
) -> Gateways:
    chain: list[Gateway] = []
    sandbox: SandboxGateway | None = None
    for name in settings.payment_gateways:
        if name == "stripe":
            assert settings.stripe_secret_key is not None  # Settings refuses stripe without it
            # Imported only when configured: the Stripe SDK is large (memory, start-up time).
            from paysvc.gateways.stripe import StripeGateway

            chain.append(
                StripeGateway(
                    settings.stripe_secret_key,
                    settings.stripe_api_base,
                    timeout_seconds=settings.stripe_timeout_seconds,
                )
            )
        else:
            sandbox = SandboxGateway(db, clock, settings.public_url)
            chain.append(sandbox)
    if wrap is not None:
        chain = [wrap(gateway) for gateway in chain]
    # Every gateway call is counted and timed (the one seam), under the gateway's own name.
    chain = [InstrumentedGateway(gateway, metrics) for gateway in chain]
    failover = FailoverGateway(chain, clock)
    metrics.watch_circuits(
        lambda: [(name, str(b.state(clock.now()))) for name, b in failover.breakers.items()]
    )
    return Gateways(failover, sandbox)
