"""The serving process of `paysvc serve`: everything it does after its options are parsed.

`paysvc serve` replaces its own process with `python -m cli.server` (same pid, same environment),
so the process that serves never holds the CLI: typer, click, the pydantic typer parses options
with, rich. Nothing at the top of this module may import them (tests/test_serving_modules.py
checks the running server's modules). A failure is still the CLI's one line and exit code: the
CLI is imported only then, to render it.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from paysvc.config import Settings
from paysvc.errors import ConfigError, PaysvcError

if TYPE_CHECKING:
    from paysvc.bootstrap import Container
    from paysvc.keys.keyring import Keyring


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server-side TLS: TLS 1.3 minimum, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    return context


def keyring(config: Settings) -> Keyring:
    """The service keys, for migrations that encrypt or decrypt stored values."""
    from paysvc.keys.keyring import Keyring

    return Keyring(
        config.encryption_key, config.encryption_keys_retired, config.encryption_keys_next
    )


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


def fail(message: str, error_code: str) -> NoReturn:
    from cli.common import fail  # the CLI, only to print the line

    fail(message, error_code=error_code)


@contextmanager
def reported(database_url: str) -> Iterator[None]:
    """Failures become the CLI's one line (cli.common.failures_as_one_line)."""
    try:
        yield
    except Exception as error:
        from cli.common import failures_as_one_line  # the CLI, only to print the line

        with failures_as_one_line(database_url):
            raise error


def settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError:
        from cli.common import settings  # the CLI, only to print the line (and exit)

        return settings()


def serve(host: str | None, port: int | None) -> None:
    """Apply migrations if needed, then run the HTTP service until SIGINT or SIGTERM."""
    import uvloop

    from paysvc.db import migrate
    from paysvc.logs import configure_logging

    config = settings()
    configure_logging(config.log_level)
    with reported(config.database_url):
        if not migrate.is_current(config.database_url):  # a restart at head skips it
            # the server never loads Alembic
            migrate.upgrade_in_subprocess(config.database_url, keyring(config))
    tls = None
    if config.tls_cert_file and config.tls_key_file:
        tls = tls_context(config.tls_cert_file, config.tls_key_file)
    bind_host, bind_port = host or config.host, port or config.port
    # uvloop: less CPU per request than asyncio's loop (scripts/bench)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, bind_host, bind_port, tls))


async def _serve(config: Settings, host: str, port: int, tls: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, with the slow-client guards (paysvc.web.slowclients)."""
    from paysvc.bootstrap import build_container
    from paysvc.web import slowclients
    from paysvc.web.app import create_app

    with reported(config.database_url):
        container = build_container(config)
        try:
            await check_keys(container)
        except BaseException:
            await container.close()
            raise
    try:
        runner, _sockets = await slowclients.start(
            create_app(container),
            host,
            port,
            request_timeout=config.request_timeout,
            max_connections_per_ip=config.max_connections_per_ip,
            ssl_context=tls,
        )
    except OSError as error:
        await container.close()
        if error.errno == errno.EADDRINUSE:
            fail(f"port {port} is in use (another paysvc serve?)", "port_in_use")
        if error.errno == errno.EACCES:
            fail(f"no permission to listen on port {port}", "port_denied")
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}", "error")
    # Said once the socket is bound, so never before a "port in use".
    print(f"paysvc listening on {'https' if tls else 'http'}://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    """`python -m cli.server HOST PORT` (from `paysvc serve`; `-` for the default)."""
    host, port = argv
    try:
        serve(None if host == "-" else host, None if port == "-" else int(port))
    except (Exception, KeyboardInterrupt) as error:
        import typer

        from cli.main import exit_code  # the CLI, only to print the line

        # Ctrl-C before the server is up: "aborted", as click reports it for any command
        return exit_code(typer.Abort() if isinstance(error, KeyboardInterrupt) else error)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
