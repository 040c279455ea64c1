"""`paysvc serve`."""

from __future__ import annotations

import asyncio
import errno
import signal
import ssl
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import fail, failures_as_one_line, run_async, settings, with_container
from cli.output import line
from paysvc.errors import PaysvcError

if TYPE_CHECKING:
    from paysvc.bootstrap import Container
    from paysvc.config import Settings


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

    missing = await keys.unreadable(container.db)  # a small record, not every row
    if missing:
        raise PaysvcError(
            f"ENCRYPTION_KEY cannot decrypt stored data (key id {', '.join(sorted(missing))}); "
            "that key is neither ENCRYPTION_KEY nor in ENCRYPTION_KEYS_NEXT or "
            "ENCRYPTION_KEYS_RETIRED (wrong key?)",
            code="encryption_key_mismatch",
        )


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default HOST or 0.0.0.0)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default PORT or 8009)")] = None,
) -> None:
    """Apply migrations if needed, then run the HTTP service."""
    import uvloop

    from cli.db import keyring
    from paysvc.db import migrate
    from paysvc.logs import configure_logging

    config = settings()
    configure_logging(config.log_level)
    with failures_as_one_line(config.database_url):
        if not migrate.is_current(config.database_url):  # a restart at head skips it
            # the server never loads Alembic
            migrate.upgrade_in_subprocess(config.database_url, keyring(config))
    run_async(with_container(check_keys))
    tls = None
    if config.tls_cert_file and config.tls_key_file:
        tls = tls_context(config.tls_cert_file, config.tls_key_file)
    bind_host, bind_port = host or config.host, port or config.port
    try:
        # uvloop: less CPU per request than asyncio's loop (scripts/bench)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(config, bind_host, bind_port, tls))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"port {bind_port} is in use (another paysvc serve?)", error_code="port_in_use")
        if error.errno == errno.EACCES:
            fail(f"no permission to listen on port {bind_port}", error_code="port_denied")
        fail(f"cannot listen on {bind_host}:{bind_port}: {error.strerror or error}")


async def _serve(config: Settings, host: str, port: int, tls: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, with the slow-client guards (paysvc.web.slowclients)."""
    from paysvc.bootstrap import build_container
    from paysvc.web import slowclients
    from paysvc.web.app import create_app

    runner, _sockets = await slowclients.start(
        create_app(build_container(config)),
        host,
        port,
        request_timeout=config.request_timeout,
        max_connections_per_ip=config.max_connections_per_ip,
        ssl_context=tls,
    )
    # Said once the socket is bound, so never before a "port in use".
    line(f"paysvc listening on {'https' if tls else 'http'}://{host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
