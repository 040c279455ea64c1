"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from paysvc.audit.chain import AuditSealer
from paysvc.bootstrap import Container
from paysvc.db.engine import SQLITE_OPTIMIZE_INTERVAL
from paysvc.events.dispatcher import Dispatcher, Endpoints
from paysvc.events.signing import Signer
from paysvc.keys import service as keys
from paysvc.reconcile.background import reconcile_forever
from paysvc.web.auth import AUTHENTICATOR, LocalAuthenticator, RemoteAuthenticator
from paysvc.web.guards import RATE_LIMITS, ip_rate_limit, pci_guard, principal_rate_limit
from paysvc.web.handlers import (
    admin,
    audit,
    disputes,
    events,
    health,
    orders,
    payments,
    refunds,
    sandbox,
    webhooks,
)
from paysvc.web.handlers.webhooks import FAILED_VERIFICATIONS, failure_buckets
from paysvc.web.headers import harden
from paysvc.web.idempotency import idempotency_middleware
from paysvc.web.keys import CONTAINER
from paysvc.web.metrics import METRICS, http_middleware
from paysvc.web.middlewares import auth_middleware, error_middleware, request_id_middleware
from paysvc.web.openapi import setup_docs
from paysvc.web.outbound import PlatformClient
from paysvc.web.ratelimit import build_limiter
from paysvc.web.slowclients import body_deadline, mark_request

MAX_BODY = 64 * 1024
SEALER_STOP_TIMEOUT = 30.0
DISPATCHER_STOP_TIMEOUT = 30.0
REJECTIONS_FLUSH_INTERVAL = 10.0
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
            mark_request,  # the connection holds a complete request now (slow-client guard)
            body_deadline,  # the whole body within REQUEST_TIMEOUT, else 408 and close
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
    app[FAILED_VERIFICATIONS] = failure_buckets()
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
    app.add_routes(events.routes)
    app.add_routes(orders.routes)
    setup_docs(app)  # the spec is built on its first request (undocumented routes stay out)
    # A page for the customer's browser, not part of the API (undocumented).
    if "sandbox" in settings.payment_gateways:  # its 3-D Secure page exists only with it
        app.add_routes(sandbox.routes)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        # Which keys this instance writes with and reads (`keys status`, rolling rotations).
        # Best effort: a database that is down must not stop the app (it answers 503 on
        # /health/ready); the heartbeat records the instance once the database is back.
        instance, started = keys.instance_id(), container.clock.now()

        async def hold() -> None:
            await keys.hold(container.db, instance, started, container.clock.now())

        with contextlib.suppress(SQLAlchemyError, OSError):
            await hold()
        heartbeat = asyncio.create_task(_repeat(keys.HOLDER_HEARTBEAT, hold))
        sealer = AuditSealer(container.db, container.keyring)
        container.audit.on_commit = sealer.wake  # entries are chained just after their commit
        task = asyncio.create_task(sealer.run(), name="paysvc-audit-sealer")
        platform = PlatformClient(settings.order_service_url)
        if container.payments.order_validator is not None:
            container.payments.order_validator.lookup = platform
        dispatcher = Dispatcher(
            container.db,
            container.clock,
            platform,
            Signer(settings.events_signing_secrets),
            Endpoints(
                settings.order_service_url,
                settings.notification_service_url,
                settings.order_service_token,
            ),
        )
        container.outbox.on_commit = dispatcher.wake  # events go out just after their commit
        dispatching = asyncio.create_task(dispatcher.run(), name="paysvc-event-dispatcher")
        yield
        container.outbox.on_commit = None
        dispatcher.stop()  # finishes the sends in progress and records them
        try:
            await asyncio.wait_for(dispatching, timeout=DISPATCHER_STOP_TIMEOUT)
        except TimeoutError:
            log.error(
                "the event dispatcher did not stop in time; claimed deliveries are "
                "retried when their claim expires"
            )
        if container.payments.order_validator is not None:
            container.payments.order_validator.lookup = None
        await platform.close()
        container.audit.on_commit = None
        sealer.stop()  # finishes the seal in progress, seals what is left, returns
        try:
            await asyncio.wait_for(task, timeout=SEALER_STOP_TIMEOUT)
        except TimeoutError:
            log.error(
                "the audit sealer did not stop in time; entries left unsealed are sealed "
                "by the next instance or `paysvc audit verify` reports them"
            )
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        with contextlib.suppress(SQLAlchemyError, OSError):
            await keys.release(container.db, instance)
        if remote is not None:
            await remote.close()
        if own_container:
            await container.close()

    async def checkpoints(_app: web.Application) -> AsyncIterator[None]:
        stop = await container.db.start_checkpoints()  # SQLite: WAL checkpoints off the loop
        yield
        await stop()

    app.cleanup_ctx.append(checkpoints)  # first: the pool it reopens is the one served from
    app.cleanup_ctx.append(lifetime)
    app.cleanup_ctx.append(_rejection_flusher(container))
    if settings.reconcile_interval > 0:
        app.cleanup_ctx.append(_background_reconciler(container, settings.reconcile_interval))
    if container.db.is_sqlite:
        app.cleanup_ctx.append(_every(SQLITE_OPTIMIZE_INTERVAL, container.db.optimize))
    return app


async def _repeat(interval: float, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception:
            log.exception("periodic %s failed; will retry", getattr(job, "__name__", job))


def _every(
    interval: float, job: Callable[[], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Run `job` every `interval` seconds while the app runs (failures are logged)."""

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_repeat(interval, job))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


def _rejection_flusher(
    container: Container, interval: float = REJECTIONS_FLUSH_INTERVAL
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Writes the aggregated audit entries of rejected webhooks once their minute is over, and
    whatever is left at shutdown (before the sealer's last seal: registered after it)."""
    rejections = container.webhooks.rejections
    stop = asyncio.Event()

    async def flush_until_stopped() -> None:
        # Stopped by the event, never cancelled: a flush is a write transaction.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            await rejections.flush(everything=stop.is_set())

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(flush_until_stopped(), name="paysvc-webhook-rejections")
        yield
        stop.set()
        await task

    return run


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
