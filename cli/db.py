"""`paysvc db upgrade|current|downgrade`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import console, failures_as_one_line, settings
from cli.server import keyring

app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)


@app.command()
def upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from paysvc.db import migrate

    config = settings()
    url = config.database_url
    with failures_as_one_line(url):
        migrate.upgrade(url, revision, keyring(config))
        console.print(f"database at {migrate.current(url) or 'base'}")


@app.command()
def current() -> None:
    """Print the current revision."""
    from paysvc.db import migrate

    url = settings().database_url
    with failures_as_one_line(url):
        console.print(migrate.current(url) or "base (empty database)")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base")],
) -> None:
    """Revert migrations down to REVISION."""
    from paysvc.db import migrate

    config = settings()
    url = config.database_url
    with failures_as_one_line(url):
        migrate.downgrade(url, revision, keyring(config))
        console.print(f"database at {migrate.current(url) or 'base'}")
