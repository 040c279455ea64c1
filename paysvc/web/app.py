"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from paysvc.audit.chain import AuditSealer
from paysvc.bootstrap import Container
from paysvc.reconcile.background import reconcile_forever
from paysvc.web.auth import AUTHENTICATOR, LocalAuthenticator, RemoteAuthenticator
from paysvc.web.guards import RATE_LIMITS, ip_rate_limit, pci_guard, principal_rate_limit
from paysvc.web.handlers import (
    admin,
    audit,
    disputes,
    health,
    payments,
    refunds,
    sandbox,
    webhooks,
)
from paysvc.web.headers import harden
from paysvc.web.idempotency import idempotency_middleware
from paysvc.web.keys import CONTAINER
from paysvc.web.metrics import METRICS, http_middleware
from paysvc.web.middlewares import auth_middleware, error_middleware, request_id_middleware
from paysvc.web.openapi import setup_docs
from paysvc.web.ratelimit import build_limiter

MAX_BODY = 64 * 1024
SEALER_STOP_TIMEOUT = 30.0
log = logging.getLogger(__name__)


def create_app(container: Container, *, own_container: bool = True) -> web.Application:
    """Build the HTTP app over a container; the app closes the container on shutdown
    unless `own_container` is False (tests that share one container)."""
    metrics = container.metrics
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            request_id_middleware,  # request id, logging context, access log
            http_middleware(metrics),
            error_middleware,
            ip_rate_limit,  # before auth: clients without valid credentials, per IP
            auth_middleware,
            principal_rate_limit,  # after auth: per principal
            pci_guard,  # before anything reads the body to store it
            # After the PCI guard and auth: keys are per principal, and nothing rejected
            # before execution (credentials, card data, rate limits) is stored.
            idempotency_middleware,
        ],
    )
    app.on_response_prepare.append(harden)
    app[METRICS] = metrics
    app[CONTAINER] = container
    settings = container.settings
    app[RATE_LIMITS] = build_limiter(
        settings.rate_limit_storage_url, settings.rate_limit_per_second, settings.rate_limit_burst
    )
    remote = (
        RemoteAuthenticator(settings.auth_service_url, container.clock)
        if settings.auth_mode == "remote"
        else None
    )
    app[AUTHENTICATOR] = remote or LocalAuthenticator(container.tokens)
    app.add_routes(health.routes)
    app.add_routes(payments.routes)
    app.add_routes(refunds.routes)
    app.add_routes(audit.routes)
    app.add_routes(disputes.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(admin.routes)
    setup_docs(app)  # the spec is built at start-up, from every route added by then
    # After the spec is built: a page for the customer's browser, not part of the API.
    if "sandbox" in settings.payment_gateways:  # its 3-D Secure page exists only with it
        app.add_routes(sandbox.routes)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        sealer = AuditSealer(container.db, container.keyring)
        container.audit.on_commit = sealer.wake  # entries are chained just after their commit
        task = asyncio.create_task(sealer.run(), name="paysvc-audit-sealer")
        yield
        container.audit.on_commit = None
        sealer.stop()  # finishes the seal in progress, seals what is left, returns
        try:
            await asyncio.wait_for(task, timeout=SEALER_STOP_TIMEOUT)
        except TimeoutError:
            log.error(
                "the audit sealer did not stop in time; entries left unsealed are sealed "
                "by the next instance or `paysvc audit verify` reports them"
            )
        if remote is not None:
            await remote.close()
        if own_container:
            await container.close()

    app.cleanup_ctx.append(lifetime)
    if settings.reconcile_interval > 0:
        app.cleanup_ctx.append(_background_reconciler(container, settings.reconcile_interval))
    return app


def _background_reconciler(
    container: Container, interval: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Every instance heals itself: stuck payments settle without any client call."""

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(reconcile_forever(container.reconcile, interval))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run
