"""`paysvc idempotency purge`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import OPERATOR, JsonOption, duration, run_async, with_container
from cli.output import line, print_json

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

app = typer.Typer(help="Idempotency keys.", no_args_is_help=True)


@app.command()
def purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove keys created before this long ago (≥ 24h)")
    ] = "24h",
    as_json: JsonOption = False,
) -> None:
    """Remove idempotency keys older than --older-than (default 24h, the minimum kept)."""
    age = duration(older_than, "--older-than")

    async def work(container: Container) -> int:
        return await container.idempotency.purge(OPERATOR, age)

    removed = run_async(with_container(work), options={"older_than": "--older-than"})
    if as_json:
        print_json({"purged": removed, "older_than": older_than})
    else:
        line(f"purged {removed} idempotency keys older than {older_than}")
