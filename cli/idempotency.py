"""`paysvc idempotency purge`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import EXIT_USAGE, OPERATOR, console, fail, print_json, run_async, with_container
from paysvc.bootstrap import Container
from paysvc.clock import parse_duration

app = typer.Typer(help="Idempotency keys.", no_args_is_help=True)


@app.command()
def purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove keys created before this long ago (≥ 24h)")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Remove idempotency keys older than --older-than (default 24h, the minimum kept)."""
    try:
        age = parse_duration(older_than)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)

    async def work(container: Container) -> int:
        return await container.idempotency.purge(OPERATOR, age)

    removed = run_async(with_container(work))
    if as_json:
        print_json({"purged": removed, "older_than": older_than})
    else:
        console.print(f"purged {removed} idempotency keys older than {older_than}")
