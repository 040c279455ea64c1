"""Build the container (settings, database, gateways, keyring, clock, services).

Used by the HTTP app, the CLI and the tests alike, so all three run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from paysvc.audit.service import AuditLog
from paysvc.auth.tokens import TokenVerifier
from paysvc.clock import Clock, SystemClock
from paysvc.config import Settings
from paysvc.db.engine import Database
from paysvc.gateways.base import Gateway
from paysvc.gateways.registry import Gateways
from paysvc.gateways.sandbox import SandboxGateway
from paysvc.idempotency.service import IdempotencyService
from paysvc.keys.keyring import Keyring
from paysvc.payments.service import PaymentService


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
    idempotency: IdempotencyService

    async def close(self) -> None:
        await self.gateways.close()
        await self.db.dispose()


def build_container(settings: Settings, *, clock: Clock | None = None) -> Container:
    clock = clock or SystemClock()
    keyring = Keyring(settings.encryption_key, settings.encryption_keys_retired)
    db = Database(settings.database_url, keyring)
    gateways = _gateways(settings, db, clock)
    audit = AuditLog(clock)
    return Container(
        settings=settings,
        clock=clock,
        keyring=keyring,
        db=db,
        gateways=gateways,
        audit=audit,
        tokens=TokenVerifier(settings.jwt_secret_key, settings.jwt_issuer, settings.jwt_audience),
        payments=PaymentService(db, gateways, clock, audit),
        idempotency=IdempotencyService(db, clock),
    )


def _gateways(settings: Settings, db: Database, clock: Clock) -> Gateways:
    by_name: dict[str, Gateway] = {}
    for name in settings.payment_gateways:
        if name == "sandbox":
            by_name[name] = SandboxGateway(db, clock)
    return Gateways(primary=by_name[settings.payment_gateways[0]], by_name=by_name)
