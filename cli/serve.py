"""`paysvc serve`."""

from __future__ import annotations

import ssl
from typing import Annotated

import typer
from aiohttp import web

from cli.common import console, settings
from paysvc.bootstrap import build_container
from paysvc.db import migrate
from paysvc.web.app import create_app


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default HOST or 0.0.0.0)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default PORT or 8009)")] = None,
) -> None:
    """Apply migrations if needed, then run the HTTP service."""
    config = settings()
    migrate.upgrade(config.database_url)
    tls = None
    if config.tls_cert_file and config.tls_key_file:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_3
        tls.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    bind_host, bind_port = host or config.host, port or config.port
    console.print(f"paysvc listening on {'https' if tls else 'http'}://{bind_host}:{bind_port}")
    web.run_app(
        create_app(build_container(config)),
        host=bind_host,
        port=bind_port,
        ssl_context=tls,
        print=None,
        access_log=None,
    )
