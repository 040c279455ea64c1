"""The process that serves holds only what serving needs (idle RSS, issue 14).

`paysvc serve` is started as a user starts it (the console script, SQLite, sandbox gateway) with
`PYTHONPROFILEIMPORTTIME=1`: every interpreter prints each module it imports on stderr, behind
one header line. `serve` replaces its process with the server's (cli/server.py), so the last
header starts the serving process's imports; read once /health answers, they are what the idle
server holds. Nothing is added to the server for this test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET

PAYSVC = Path(sys.executable).parent / "paysvc"
HEADER = "import time: self [us] | cumulative | imported package"
STARTUP_DEADLINE = 180  # seconds; polled, so a fast start costs nothing
# Packages the idle server must not hold: migrations run in a child process; the Stripe SDK
# only with PAYMENT_GATEWAY=stripe, asyncpg only on PostgreSQL; the CLI (typer, click, the
# pydantic typer parses options with, rich tables) stays in the process that parsed `serve`;
# the OpenAPI spec (apispec) is built on its first request.
FORBIDDEN = (
    "alembic",
    "mako",
    "stripe",
    "asyncpg",
    "typer",
    "click",
    "pydantic",
    "rich",
    "apispec",
)
# ... and what it must hold, so that the check above cannot pass by reading nothing.
SERVING = ("aiohttp.web", "sqlalchemy.ext.asyncio", "aiosqlite", "paysvc.web.app")


def imported(stderr: str) -> list[set[str]]:
    """The modules each interpreter imported, in the order the interpreters started."""
    processes: list[set[str]] = []
    for line in stderr.splitlines():
        if line.startswith(HEADER):
            processes.append(set())
        elif line.startswith("import time:") and processes:
            processes[-1].add(line.rsplit("|", 1)[1].strip())
    return processes


def up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        assert process.poll() is None, "paysvc serve exited"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our server
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"paysvc serve did not come up within {STARTUP_DEADLINE} s")


def test_the_idle_server_holds_neither_the_cli_nor_migrations_nor_unused_drivers(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/serving.db",
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
    }
    # Migrated beforehand: serve then starts no migration child (whose imports would mix in).
    subprocess.run([PAYSVC, "db", "upgrade"], env=env, check=True, capture_output=True)  # noqa: S603
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [PAYSVC, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            up(f"http://127.0.0.1:{port}/health", process)
        finally:
            process.terminate()
            assert process.wait(timeout=60) == 0
    cli, server = imported(log.read_text())  # the CLI, then the server that replaced it
    assert {"typer", "cli.main"} <= cli
    assert set(SERVING) <= server
    held = sorted(m for m in server if m.split(".")[0] in FORBIDDEN)
    assert held == [], f"the serving process imported {held}"
