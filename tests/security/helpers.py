"""Helpers for the security tests: the CLI on the test's database, raw database bytes, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from cli.main import app
from paysvc.bootstrap import build_container
from paysvc.db.models import metadata
from paysvc.logs import configure_logging
from paysvc.web.app import create_app
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET, make_settings


async def paysvc(database_url: str, *args: str, **env: str) -> Result:
    """Run the CLI in a thread (it runs its own event loop) against the test's database."""
    full = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "ENCRYPTION_KEYS_RETIRED": "",
        "PAYMENT_GATEWAY": "sandbox",
        **env,
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=full)
    finally:  # `serve` installs its log handler on CliRunner's stream: put things back
        root.handlers[:] = handlers
        root.setLevel(level)


def error_lines(result: Result) -> list[str]:
    """What the command said besides JSON log lines."""
    return [
        line for line in result.output.splitlines() if line.strip() and not line.startswith("{")
    ]


async def raw_database(database_url: str) -> bytes:
    """Everything the database holds, as stored: SQLite file (and WAL) bytes; on PostgreSQL
    every row of every table rendered as text."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        parts = [path, path.with_name(path.name + "-wal")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        chunks = []
        for table in metadata.sorted_tables:
            query = f'SELECT t::text AS row FROM "{table.name}" t'  # noqa: S608 (our tables)
            rows = await connection.fetch(query)
            chunks.extend(row["row"].encode() for row in rows)
        return b"\n".join(chunks)
    finally:
        await connection.close()


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The service's JSON log output (the handler `paysvc serve` installs), into a buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", stream=stream)  # as `paysvc serve`
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def client_with(
    aiohttp_client: Callable[..., Any], database_url: str, **env: str
) -> TestClient[Any, Any]:
    """A client over an app of its own, built with these settings (the app owns its container)."""
    container = build_container(make_settings(database_url, **env))
    return await aiohttp_client(create_app(container))  # type: ignore[no-any-return]


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
