"""What every command shares: settings, the container, run_async, output and exit codes."""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from paysvc.audit.chain import seal_pending
from paysvc.auth.principal import Actor, Role
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.errors import ConfigError, PaysvcError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

EXIT_DOMAIN = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3


def _operator() -> Actor:
    """Who runs this command, for the audit trail: the OS user and host (one process per
    command, so one request id per command correlates its entries)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return Actor(
        id=f"operator:{user}"[:64],
        role=Role.ADMIN,
        origin=f"cli:{socket.gethostname()}"[:64],
        request_id="cli_" + secrets.token_hex(12),
    )


OPERATOR = _operator()


def fail(message: str, code: int = EXIT_DOMAIN) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        fail(f"configuration: {error.message}")


def _migration_error() -> type[Exception]:
    """Alembic's error type, imported only when needed (a server never loads Alembic)."""
    from alembic.util import CommandError

    return CommandError


@contextmanager
def failures_as_one_line() -> Iterator[None]:
    """Domain, migration and database errors become one line and exit code 1 (never a
    traceback with SQL in it)."""
    try:
        yield
    except PaysvcError as error:
        fail(error.message)
    except _migration_error() as error:  # evaluated only when an error gets this far
        fail(f"migrations: {error}")
    except (SQLAlchemyError, OSError) as error:
        fail(
            f"database: {type(error).__name__} - is DATABASE_URL reachable and migrated "
            "(`paysvc db upgrade`)?"
        )


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; failures become one line and exit code 1."""
    with failures_as_one_line():
        return asyncio.run(coroutine)
    raise AssertionError("unreachable")


async def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run a command's work over a fresh container; audit entries it committed are sealed into
    the chain before it exits (no need for a running server's sealer)."""
    container = build_container(settings())
    audited = False

    def note() -> None:
        nonlocal audited
        audited = True

    container.audit.on_commit = note
    try:
        result = await work(container)
        if audited:
            await seal_pending(container.db, container.keyring)
        return result
    finally:
        await container.close()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
