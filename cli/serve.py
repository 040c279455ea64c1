"""`paysvc serve`: the options; the serving itself is cli/server.py, in a process of its own."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cli.server import check_keys as check_keys
from cli.server import tls_context as tls_context

# Set by the `paysvc` command itself (cli.main.main): serving then replaces this process.
REPLACE_PROCESS = False


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default HOST or 0.0.0.0)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default PORT or 8009)")] = None,
) -> None:
    """Apply migrations if needed, then run the HTTP service."""
    from cli import server

    if REPLACE_PROCESS:
        # The same pid and environment, without the CLI (typer, click, pydantic, rich) that
        # serving never uses: about 14 MB less idle RSS (scripts/bench). `-P`: the working
        # directory is not put on sys.path, as for the `paysvc` command.
        sys.stdout.flush()
        sys.stderr.flush()
        arguments = [host or "-", "-" if port is None else str(port)]
        command = [sys.executable, "-P", "-m", "cli.server", *arguments]
        os.execv(sys.executable, command)  # noqa: S606 - our own interpreter and module
    server.serve(host, port)
