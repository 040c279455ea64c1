"""Run Alembic programmatically (CLI `paysvc db`, `paysvc serve`, tests)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from paysvc.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

from paysvc.keys.keyring import Keyring

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(
    url: str, output: io.StringIO | None = None, keyring: Keyring | None = None
) -> Config:
    """`keyring` (the service keys) lets a data migration encrypt or decrypt stored values;
    `migration_keyring()` in a revision refuses to touch such rows without it."""
    from alembic.config import Config  # Alembic is loaded only by what migrates

    config = Config(str(ROOT / "alembic.ini"), stdout=output or io.StringIO())
    config.attributes["url"] = url
    config.attributes["keyring"] = keyring
    return config


def upgrade(url: str, revision: str = "head", keyring: Keyring | None = None) -> None:
    from alembic import command

    command.upgrade(alembic_config(url, keyring=keyring), revision)


def downgrade(url: str, revision: str, keyring: Keyring | None = None) -> None:
    from alembic import command

    command.downgrade(alembic_config(url, keyring=keyring), revision)


def current(url: str) -> str:
    from alembic import command

    output = io.StringIO()
    command.current(alembic_config(url, output))
    return output.getvalue().strip()


_URL_VARIABLE = "PAYSVC_MIGRATE_DATABASE_URL"  # passed by environment: never in `ps` output
_KEYS_VARIABLE = "PAYSVC_MIGRATE_KEYS"  # the service keys, likewise
_REVISION = re.compile(r"""^revision(?::[^=\n]*)?=\s*["']([^"']+)["']""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision(?::[^=\n]*)?=\s*["']([^"']+)["']""", re.M)


def script_heads() -> set[str]:
    """The head revisions of migrations/versions, read from the files without Alembic (a
    merge revision's tuple of parents is not parsed: then nothing looks current, and the
    caller migrates, which is always safe)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (ROOT / "migrations" / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revisions.update(_REVISION.findall(text))
        parents.update(_DOWN_REVISION.findall(text))
    return revisions - parents


def is_current(url: str) -> bool:
    """Is the database already at the head revision? (False when unsure.) Lets `serve` skip
    starting a migration process on an ordinary restart."""
    from sqlalchemy import text

    from paysvc.db.engine import create_engine

    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return {str(row[0]) for row in rows}
        finally:
            await engine.dispose()

    try:
        return asyncio.run(read()) == script_heads()
    except Exception:  # no table, no database, …: let the migration say
        return False


def upgrade_in_subprocess(url: str, keys: Keyring | None = None) -> None:
    """`upgrade` in a child process, so that a server never keeps Alembic and the migration
    modules in memory. `keys` reach the child by environment (data migrations that encrypt
    stored values need them). Failure: ConfigError with the child's one-line reason."""
    env = {**os.environ, _URL_VARIABLE: url}
    if keys is not None:
        env[_KEYS_VARIABLE] = keys.export()
    done = subprocess.run(
        [sys.executable, "-m", "paysvc.db.migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise ConfigError("DATABASE_URL", f"migrations failed: {lines[-1]}")


def _main() -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    exported = os.environ.get(_KEYS_VARIABLE)
    keyring = Keyring.imported(exported) if exported else None
    try:
        upgrade(os.environ[_URL_VARIABLE], keyring=keyring)
    except CommandError as error:
        print(f"migrations: {error}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as error:  # one line, never SQL or a traceback
        print(f"database: {type(error).__name__} - is DATABASE_URL reachable?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
