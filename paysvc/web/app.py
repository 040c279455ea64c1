"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from paysvc import __version__
from paysvc.bootstrap import Container
from paysvc.web.auth import AUTHENTICATOR, LocalAuthenticator, RemoteAuthenticator
from paysvc.web.handlers import health, payments
from paysvc.web.idempotency import idempotency_middleware
from paysvc.web.keys import CONTAINER
from paysvc.web.middlewares import auth_middleware, error_middleware, request_id_middleware

MAX_BODY = 64 * 1024


def create_app(container: Container, *, own_container: bool = True) -> web.Application:
    """Build the HTTP app over a container; the app closes the container on shutdown
    unless `own_container` is False (tests that share one container)."""
    app = web.Application(
        client_max_size=MAX_BODY,
        # Idempotency after auth: keys are per principal; rejected credentials store nothing.
        middlewares=[
            request_id_middleware,
            error_middleware,
            auth_middleware,
            idempotency_middleware,
        ],
    )
    app[CONTAINER] = container
    settings = container.settings
    remote = (
        RemoteAuthenticator(settings.auth_service_url, container.clock)
        if settings.auth_mode == "remote"
        else None
    )
    app[AUTHENTICATOR] = remote or LocalAuthenticator(container.tokens)
    app.add_routes(health.routes)
    app.add_routes(payments.routes)
    setup_aiohttp_apispec(
        app,
        title="paysvc",
        version=__version__,
        url="/openapi.json",
        swagger_path="/docs",
    )

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        yield
        if remote is not None:
            await remote.close()
        if own_container:
            await container.close()

    app.cleanup_ctx.append(lifetime)
    return app
