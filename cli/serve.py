"""`paysvc serve`."""

from __future__ import annotations

import ssl
from typing import Annotated

import typer
import uvloop
from aiohttp import web

from cli.common import console, run_async, settings, with_container
from paysvc.bootstrap import Container, build_container
from paysvc.db import migrate
from paysvc.errors import ConfigError
from paysvc.keys import service as keys
from paysvc.logs import configure_logging
from paysvc.web.app import create_app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server-side TLS: TLS 1.3 minimum, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    return context


async def check_keys(container: Container) -> None:
    """Refuse to start when stored data is under a key the keyring does not have: a wrong
    ENCRYPTION_KEY must stop start-up, not fail request by request."""
    missing = await keys.unreadable(container.db)
    if missing:
        raise ConfigError(
            "ENCRYPTION_KEY",
            f"stored data is encrypted or MACed under key id(s) {', '.join(sorted(missing))}, "
            "which are not ENCRYPTION_KEY, ENCRYPTION_KEYS_NEXT or ENCRYPTION_KEYS_RETIRED "
            "(wrong key?)",
        )


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default HOST or 0.0.0.0)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default PORT or 8009)")] = None,
) -> None:
    """Apply migrations if needed, then run the HTTP service."""
    configure_logging()
    config = settings()
    migrate.upgrade_in_subprocess(config.database_url)  # Alembic never loaded in the server
    run_async(with_container(check_keys))
    tls = None
    if config.tls_cert_file and config.tls_key_file:
        tls = tls_context(config.tls_cert_file, config.tls_key_file)
    bind_host, bind_port = host or config.host, port or config.port
    console.print(f"paysvc listening on {'https' if tls else 'http'}://{bind_host}:{bind_port}")
    web.run_app(
        create_app(build_container(config)),
        host=bind_host,
        port=bind_port,
        ssl_context=tls,
        print=None,
        access_log=None,  # our own access log line (request id, route template, no query)
        loop=uvloop.new_event_loop(),  # less CPU per request than asyncio's loop (scripts/bench)
    )
