"""`paysvc reconcile [--since 24h] [--apply] [--json]`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from cli.common import (
    EXIT_DOMAIN,
    EXIT_DRIFT,
    EXIT_USAGE,
    OPERATOR,
    console,
    err_console,
    fail,
    print_json,
    run_async,
    with_container,
)
from paysvc.bootstrap import Container
from paysvc.clock import parse_duration
from paysvc.reconcile.service import Report


def reconcile(
    since: Annotated[
        str, typer.Option(help="Compare payments and refunds created in this window (30m, 24h, 7d)")
    ] = "24h",
    apply: Annotated[
        bool, typer.Option("--apply", help="Settle the drift (otherwise only report it)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Compare recent payments and refunds with the gateway and print the drift.

    Exit 0: no drift; 3: drift found (and fixed with --apply); 1: error. Safe from cron and
    safe to run twice at once."""
    try:
        window = parse_duration(since)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)

    async def work(container: Container) -> Report:
        return await container.reconcile.run(window, apply, actor=OPERATOR)

    report = run_async(with_container(work))
    if as_json:
        print_json(report.as_dict())
    else:
        _render(report, apply)
    if report.errors:
        raise typer.Exit(EXIT_DOMAIN)
    if report.drift:
        raise typer.Exit(EXIT_DRIFT)


def _render(report: Report, apply: bool) -> None:
    if report.items:
        table = Table(Column("id", no_wrap=True), "kind", "ours", "gateway", "action", "applied")
        for item in report.items:
            table.add_row(
                item.id,
                item.kind,
                item.ours,
                item.theirs,
                item.action,
                "yes" if item.applied else "no",
            )
        console.print(table)
    summary = (
        f"checked {report.checked} payments and {report.checked_refunds} refunds: "
        f"{len(report.items)} drifted"
    )
    if apply:
        summary += f", {sum(i.applied for i in report.items)} fixed"
        summary += f", {report.webhooks_applied} waiting webhook events applied"
    console.print(summary)
    for error in report.errors:
        err_console.print(f"[red]error:[/red] {error}", highlight=False)
