"""`paysvc reconcile [--since 24h] [--apply] [--json]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    EXIT_DOMAIN,
    EXIT_DRIFT,
    OPERATOR,
    JsonOption,
    duration,
    run_async,
    with_container,
)
from cli.output import Col, console, err_console, line, print_json, render_error, table

if TYPE_CHECKING:
    from paysvc.bootstrap import Container
    from paysvc.reconcile.service import Report

DRIFT_COLUMNS = (
    Col("id", keep=True),
    Col("kind", min_width=8, priority=1),
    Col("ours", min_width=10),
    Col("gateway", min_width=10),
    Col("action", min_width=12),
    Col("applied", keep=True, priority=2),
)


def reconcile(
    since: Annotated[
        str, typer.Option(help="Compare payments and refunds created in this window (30m, 24h, 7d)")
    ] = "24h",
    apply: Annotated[
        bool, typer.Option("--apply", help="Settle the drift (otherwise only report it)")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare recent payments and refunds with the gateway and print the drift.

    Exit 0: no drift; 3: drift found (and fixed with --apply); 1: error. Safe from cron and
    safe to run twice at once. On a terminal, a spinner counts what was checked."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    window = duration(since, "--since")

    with Progress(
        SpinnerColumn(),
        TextColumn("checked {task.completed} payments and refunds, {task.fields[drift]} drifted"),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("reconcile", total=None, drift=0)

        def progress(report: Report) -> None:
            done = report.checked + report.checked_refunds
            bar.update(task, completed=done, drift=len(report.items))

        async def work(container: Container) -> Report:
            return await container.reconcile.run(window, apply, actor=OPERATOR, progress=progress)

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
        rows = [
            (
                item.id,
                item.kind,
                item.ours,
                item.theirs,
                item.action,
                "yes" if item.applied else "no",
            )
            for item in report.items
        ]
        console.print(table(DRIFT_COLUMNS, rows))
    summary = (
        f"checked {report.checked} payments and {report.checked_refunds} refunds: "
        f"{len(report.items)} drifted"
    )
    if apply:
        summary += f", {sum(i.applied for i in report.items)} fixed"
        summary += f", {report.webhooks_applied} waiting webhook events applied"
    line(summary)
    for error in report.errors:
        render_error(error)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
