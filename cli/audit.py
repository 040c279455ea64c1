"""`paysvc audit verify|export`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO

import typer

from cli.common import (
    OPERATOR,
    JsonOption,
    fail,
    run_async,
    usage_error,
    with_container,
)
from cli.output import err_console, line, print_json
from paysvc.clock import parse_duration

if TYPE_CHECKING:
    from paysvc.audit import chain
    from paysvc.bootstrap import Container

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


class ExportFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


def parse_when(text: str | None, option: str) -> dt.datetime | None:
    """`24h`/`7d` (that long ago), an RFC 3339 time, or a date (midnight UTC)."""
    if text is None:
        return None
    try:
        return dt.datetime.now(dt.UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        usage_error(option, "use a duration (24h, 7d), a date or an RFC 3339 time")
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _expected_head(text: str | None) -> tuple[int, str] | None:
    from paysvc.audit import chain

    if text is None:
        return None
    try:
        return chain.parse_head(text)
    except ValueError as error:
        usage_error("--expect-head", str(error))


@app.command()
def head(as_json: JsonOption = False) -> None:
    """Print the newest sealed entry as `SEQ:ID` and its MAC.

    Append it to storage outside the database (cron), then `verify --expect-head SEQ:ID`
    detects entries cut off the end of the chain. Exit 1 when nothing is sealed yet.
    """
    from paysvc.audit import chain

    async def work(container: Container) -> chain.Head | None:
        return await chain.head(container.db)

    newest = run_async(with_container(work))
    if newest is None:
        fail("no sealed audit entry yet")
    if as_json:
        print_json({"head": str(newest), "seq": newest.seq, "id": newest.id, "mac": newest.mac})
        return
    line(f"{newest} {newest.mac}")


@app.command()
def verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:ID",
            help="A head recorded earlier (`paysvc audit head`): fail if it is gone or changed",
        ),
    ] = None,
    as_json: JsonOption = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes verifying seq ranges in parallel")
    ] = os.cpu_count() or 1,
    from_checkpoint: Annotated[
        bool,
        typer.Option(help="Start after the last checkpoint (saved by each successful verify)"),
    ] = False,
) -> None:
    """Check every entry's MAC and the chain; exit 1 naming the first bad entry.

    Record the head (`paysvc audit head`) outside the database and pass the last one recorded
    with --expect-head: cutting entries off the end of the chain can only be detected against
    such an outside record.
    """
    from paysvc.audit import chain

    expected = _expected_head(expect_head)

    async def work(container: Container) -> chain.VerifyResult:
        result = await chain.verify(
            container.db, container.keyring, workers=workers, from_checkpoint=from_checkpoint
        )
        if result.ok and expected is not None:
            problem = await chain.check_head(container.db, *expected)
            if problem is not None:
                return dataclasses.replace(result, ok=False, first_bad=expected[1], problem=problem)
        await chain.save_checkpoint(container.db, container.keyring, result)  # only when ok
        return result

    result = run_async(with_container(work))
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "checked": result.checked,
                "first_bad": result.first_bad,
                "problem": result.problem,
                "last_seq": result.last_seq,
                "last_id": result.last_id,
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    if not result.ok:
        fail(f"audit entry {result.first_bad} failed verification: {result.problem}")
    head = (
        f"last seq {result.last_seq} id {result.last_id}"
        if result.last_id is not None
        else "nothing sealed yet"
    )
    line(f"{result.checked} entries verified; {head}")


@app.command()
def export(
    since: Annotated[
        str | None, typer.Option(help="From (inclusive): 24h, 7d, a date or an RFC 3339 time")
    ] = None,
    until: Annotated[str | None, typer.Option(help="To (exclusive), same forms")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Output format")] = (
        ExportFormat.JSONL
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE (default stdout)")
    ] = None,
) -> None:
    """Stream entries, oldest first, as JSON lines or CSV (constant memory). Audited."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from paysvc.audit.trail import AuditFilter

    where = AuditFilter(since=parse_when(since, "--since"), until=parse_when(until, "--until"))
    kind: Literal["jsonl", "csv"] = "csv" if fmt is ExportFormat.CSV else "jsonl"
    with ExitStack() as stack:
        out: TextIO = sys.stdout
        progress: Any = None
        if output is not None:
            out = stack.enter_context(output.open("w", encoding="utf-8", newline=""))
            bar = stack.enter_context(
                Progress(
                    SpinnerColumn(),
                    TextColumn("exporting {task.completed} entries"),
                    console=err_console,
                    transient=True,
                )
            )
            task = bar.add_task("export", total=None)

            def progress(count: int) -> None:
                bar.update(task, completed=count)

        async def work(container: Container) -> int:
            return await container.audit_trail.export(
                OPERATOR, out, where, fmt=kind, progress=progress
            )

        count = run_async(with_container(work))
    if output is not None:
        line(f"exported {count} entries to {output}")
