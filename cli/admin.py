"""`paysvc admin rebuild-rollup`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.common import OPERATOR, JsonOption, run_async, with_container
from cli.output import line, print_json

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

app = typer.Typer(help="Administrative maintenance.", no_args_is_help=True)


@app.command("rebuild-rollup")
def rebuild_rollup(as_json: JsonOption = False) -> None:
    """Recompute the per-day transaction rollup (/admin/transactions) from the payments.

    Database triggers keep it exact in the same transaction as each payment change; run this
    after restoring or hand-editing `payments`. Audited.
    """

    async def work(container: Container) -> int:
        return await container.admin.rebuild_rollup(OPERATOR)

    rows = run_async(with_container(work))
    if as_json:
        print_json({"rows": rows})
    else:
        line(f"rollup rebuilt: {rows} rows")
