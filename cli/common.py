"""What every command shares: settings, the container, run_async, output and exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from alembic.util import CommandError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

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

OPERATOR = Actor(id="operator", role=Role.ADMIN, origin="cli")


def fail(message: str, code: int = EXIT_DOMAIN) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        fail(f"configuration: {error.message}")


@contextmanager
def failures_as_one_line() -> Iterator[None]:
    """Domain, migration and database errors become one line and exit code 1 (never a
    traceback with SQL in it)."""
    try:
        yield
    except PaysvcError as error:
        fail(error.message)
    except CommandError as error:
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
    container = build_container(settings())
    try:
        return await work(container)
    finally:
        await container.close()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
