"""`paysvc db upgrade|current|downgrade`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import console, settings
from paysvc.db import migrate

app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)


@app.command()
def upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    migrate.upgrade(settings().database_url, revision)
    console.print(f"database at {migrate.current(settings().database_url) or 'base'}")


@app.command()
def current() -> None:
    """Print the current revision."""
    console.print(migrate.current(settings().database_url) or "base (empty database)")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base")],
) -> None:
    """Revert migrations down to REVISION."""
    migrate.downgrade(settings().database_url, revision)
    console.print(f"database at {migrate.current(settings().database_url) or 'base'}")
