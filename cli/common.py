"""What every command shares: settings, the container, run_async, failures and exit codes.

Commands import the service layer *inside* the command function (the lazy-import pattern), so
that `paysvc --help` and completion never load SQLAlchemy, aiohttp, alembic or stripe:

    @app.command()
    def show(payment_id: str, as_json: JsonOption = False) -> None:
        from paysvc.payments.schemas import render_payment   # heavy: here, not at the top

        async def work(container: Container) -> dict[str, Any]:
            return render_payment(await container.payments.get(OPERATOR, payment_id))

        payment = run_async(with_container(work))

Types used only in annotations come in under `if TYPE_CHECKING:`. Every failure is one line on
stderr (`fail`, or an exception turned into one by `run_async`/`failures_as_one_line`), or the
JSON error object when the command has a `--json` option (named `as_json`) and it is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import getpass
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer import _click as click  # typer vendors click (0.29+): its exceptions, context

from cli.output import console as console
from cli.output import err_console as err_console
from cli.output import print_json as print_json
from cli.output import render_error
from paysvc.auth.principal import Actor, Role
from paysvc.config import DEFAULT_DATABASE_URL, Settings, env_value, sqlite_path
from paysvc.errors import ConfigError, InvalidRequest, PaysvcError

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

T = TypeVar("T")

EXIT_DOMAIN = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (errors too, on stderr)")]


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


def json_mode() -> bool:
    """Whether the running command was given `--json` (its parameter is named `as_json`)."""
    context = click.globals.get_current_context(silent=True)
    return bool(context is not None and context.params.get("as_json"))


def fail(
    message: str, code: int = EXIT_DOMAIN, *, type_: str = "cli_error", error_code: str = "error"
) -> NoReturn:
    """Print one error line (JSON with `--json`) and exit with `code`."""
    if code == EXIT_USAGE and type_ == "cli_error":
        type_, error_code = "usage_error", "invalid_usage"
    render_error(message, type_=type_, code=error_code, as_json=json_mode())
    raise typer.Exit(code)


def usage_error(option: str, problem: str) -> NoReturn:
    """A bad option value: exit 2, like the errors click finds itself."""
    fail(f"invalid value for {option}: {problem}", EXIT_USAGE)


def duration(text: str, option: str) -> dt.timedelta:
    """`30m`, `24h`, `7d` as a timedelta, or a usage error (exit 2) naming the option."""
    from paysvc.clock import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        usage_error(option, str(error))


def settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        fail(f"configuration: {error.message}", type_="config_error", error_code=error.code)


@contextmanager
def failures_as_one_line(
    database_url: str | None = None, options: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Domain, migration, key and database errors become one line and exit code 1 (never a
    traceback with SQL in it). `options` maps a service parameter to the CLI option it came
    from (`{"older_than": "--older-than"}`): the service rejecting it is a usage error (exit 2)."""
    from sqlalchemy.exc import SQLAlchemyError

    from paysvc.keys.keyring import DecryptionError

    try:
        yield
    except InvalidRequest as error:
        if options and error.param is not None and error.param in options:
            usage_error(options[error.param], error.message)
        fail(error.message, type_=error.type, error_code=error.code)
    except PaysvcError as error:
        fail(error.message, type_=error.type, error_code=error.code)
    except DecryptionError as error:
        fail(
            describe_decryption_error(error),
            type_="api_error",
            error_code="encryption_key_mismatch",
        )
    except (SQLAlchemyError, OSError) as error:
        fail(
            describe_database_error(error, database_url),
            type_="api_error",
            error_code="database_error",
        )
    except Exception as error:
        if not _is_migration_error(error):
            raise
        fail(f"migrations: {error}", type_="api_error", error_code="migration_error")


def _is_migration_error(error: Exception) -> bool:
    """An Alembic `CommandError`, told without importing Alembic: a process that never loaded
    it cannot have raised one (`serve` migrates in a child process and never loads it)."""
    alembic_util = sys.modules.get("alembic.util")
    return alembic_util is not None and isinstance(error, alembic_util.CommandError)


def describe_decryption_error(error: Exception) -> str:
    """`ENCRYPTION_KEY cannot decrypt stored data (key id 1a2b3c4d5e6f)`."""
    import re

    found = re.search(r"no key '([0-9a-f]+)'", str(error))
    key = f"key id {found.group(1)}" if found else "tampered or moved value"
    return (
        f"ENCRYPTION_KEY cannot decrypt stored data ({key}); set the key it was written with, "
        "or list it in ENCRYPTION_KEYS_RETIRED"
    )


def describe_database_error(error: BaseException, url: str | None) -> str:
    """Tell apart a database that is not there, not reachable, or not migrated."""
    from sqlalchemy.engine import make_url

    where = ""
    if url:
        parsed = make_url(url)
        where = (
            f" ({parsed.database})"
            if parsed.drivername.startswith("sqlite")
            else f" ({parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database})"
        )
    cause: BaseException = getattr(error, "orig", None) or error
    text = f"{type(cause).__name__} {cause}".lower()
    if (
        "no such table" in text
        or "undefinedtable" in text
        or ("does not exist" in text and ("relation" in text))
    ):
        return f"database{where} is not migrated: run `paysvc db upgrade`"
    if "no such column" in text or "undefinedcolumn" in text:
        return f"database{where} is behind this version: run `paysvc db upgrade`"
    if "invalidcatalogname" in text or ("database" in text and "does not exist" in text):
        return f"database{where} does not exist: create it, then run `paysvc db upgrade`"
    if "unable to open database file" in text:
        return f"database{where} cannot be opened (missing directory or no permission)"
    refused = isinstance(cause, ConnectionRefusedError) or "connect call failed" in text
    if refused or (isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED):
        return f"database{where} is unreachable (connection refused): is it running?"
    if isinstance(cause, OSError | TimeoutError):
        return f"database{where} is unreachable: {type(cause).__name__} {cause}"
    return f"database{where}: {type(cause).__name__} (see `paysvc db current`)"


def run_async(coroutine: Coroutine[Any, Any, T], options: Mapping[str, str] | None = None) -> T:
    """Run one command's coroutine; failures become one line and exit code 1 (2 for a value
    of one of `options` the service rejected, see failures_as_one_line)."""
    with failures_as_one_line(_database_url(), options):
        return asyncio.run(coroutine)
    raise AssertionError("unreachable")


def _database_url() -> str | None:
    """DATABASE_URL as the settings read it (also from DATABASE_URL_FILE), for error messages."""
    try:
        return env_value(os.environ, "DATABASE_URL") or DEFAULT_DATABASE_URL
    except ConfigError:
        return None


def sqlite_file_missing(url: str) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create an empty
    one), or None."""
    path = sqlite_path(url)
    return str(path) if path is not None and not path.exists() else None


async def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run a command's work over a fresh container; audit entries it committed are sealed into
    the chain before it exits (no need for a running server's sealer)."""
    from paysvc.audit.chain import seal_pending
    from paysvc.bootstrap import build_container

    config = settings()
    missing = sqlite_file_missing(config.database_url)
    if missing:
        fail(
            f"database ({missing}) does not exist: run `paysvc db upgrade` to create it",
            type_="api_error",
            error_code="database_error",
        )
    container = build_container(config)
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
