"""Run Alembic programmatically (CLI `paysvc db`, `paysvc serve`, tests)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from paysvc.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config  # Alembic is loaded only by what migrates

    config = Config(str(ROOT / "alembic.ini"), stdout=output or io.StringIO())
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str:
    from alembic import command

    output = io.StringIO()
    command.current(alembic_config(url, output))
    return output.getvalue().strip()


_URL_VARIABLE = "PAYSVC_MIGRATE_DATABASE_URL"  # passed by environment: never in `ps` output


def upgrade_in_subprocess(url: str) -> None:
    """`upgrade` in a child process, so that a server never keeps Alembic and the migration
    modules in memory. Failure: ConfigError with the child's one-line reason."""
    done = subprocess.run(
        [sys.executable, "-m", "paysvc.db.migrate"],
        env={**os.environ, _URL_VARIABLE: url},
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

    try:
        upgrade(os.environ[_URL_VARIABLE])
    except CommandError as error:
        print(f"migrations: {error}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as error:  # one line, never SQL or a traceback
        print(f"database: {type(error).__name__} - is DATABASE_URL reachable?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
