"""`paysvc serve`."""

from __future__ import annotations

import errno
import ssl
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import fail, failures_as_one_line, run_async, settings, with_container
from cli.output import line
from paysvc.errors import PaysvcError

if TYPE_CHECKING:
    from paysvc.bootstrap import Container


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server-side TLS: TLS 1.3 minimum, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    return context


async def check_keys(container: Container) -> None:
    """Refuse to start when stored data is under a key the keyring does not have: a wrong
    ENCRYPTION_KEY must stop start-up, not fail request by request."""
    from paysvc.keys import service as keys

    missing = await keys.unreadable(container.db)
    if missing:
        ids = ", ".join(f"{key_id}: {count} values" for key_id, count in sorted(missing.items()))
        raise PaysvcError(
            f"ENCRYPTION_KEY cannot decrypt stored data (key id {ids}); that key is neither "
            "ENCRYPTION_KEY nor in ENCRYPTION_KEYS_RETIRED (wrong key?)",
            code="encryption_key_mismatch",
        )


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default HOST or 0.0.0.0)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default PORT or 8009)")] = None,
) -> None:
    """Apply migrations if needed, then run the HTTP service."""
    from aiohttp import web

    from paysvc.bootstrap import build_container
    from paysvc.db import migrate
    from paysvc.logs import configure_logging
    from paysvc.web.app import create_app

    config = settings()
    configure_logging(config.log_level)
    with failures_as_one_line(config.database_url):
        migrate.upgrade(config.database_url)
    run_async(with_container(check_keys))
    tls = None
    if config.tls_cert_file and config.tls_key_file:
        tls = tls_context(config.tls_cert_file, config.tls_key_file)
    bind_host, bind_port = host or config.host, port or config.port
    scheme = "https" if tls else "http"
    try:
        web.run_app(
            create_app(build_container(config)),
            host=bind_host,
            port=bind_port,
            ssl_context=tls,
            # Said once the socket is bound, so never before a "port in use".
            print=lambda _: line(f"paysvc listening on {scheme}://{bind_host}:{bind_port}"),
            access_log=None,  # our own access log line (request id, route template, no query)
        )
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"port {bind_port} is in use (another paysvc serve?)", error_code="port_in_use")
        if error.errno == errno.EACCES:
            fail(f"no permission to listen on port {bind_port}", error_code="port_denied")
        fail(f"cannot listen on {bind_host}:{bind_port}: {error.strerror or error}")
