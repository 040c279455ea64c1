"""`paysvc keys generate|status|rotate`."""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import OPERATOR, JsonOption, run_async, with_container
from cli.output import Col, console, err_console, line, print_json, table

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

app = typer.Typer(help="Encryption keys: generate, status, rotation.", no_args_is_help=True)


@app.command()
def generate() -> None:
    """Print a new random key (32 bytes, base64) for ENCRYPTION_KEY."""
    typer.echo(base64.b64encode(secrets.token_bytes(32)).decode())


async def _status(container: Container) -> dict[str, Any]:
    from paysvc.keys import service

    keyring = container.keyring
    values = await service.status(container.db)
    macs = await service.audit_key_usage(container.db)
    rows = []
    for key_id in sorted({*keyring.key_ids, *values, *macs}):
        state = keyring.state(key_id)  # active, next, retired or unknown
        rows.append(
            {
                "key_id": key_id,
                "state": state,
                "values": values.get(key_id, 0),
                "audit_macs": macs.get(key_id, 0),
            }
        )
    from paysvc.clock import rfc3339

    instances = await service.rollout(container.db, container.clock.now())
    return {
        "active_key_id": keyring.active_id,
        "keys": rows,
        "pending": await service.pending(container.db),
        "instances": [
            {
                "instance_id": i.instance_id,
                "active_key_id": i.active_key_id,
                "readable_key_ids": list(i.readable_key_ids),
                "seen_at": rfc3339(i.seen_at),
                "safe": i.safe,
                "cannot_read": list(i.cannot_read),
            }
            for i in instances
        ],
    }


KEY_COLUMNS = (
    Col("key id", keep=True),
    Col("state", keep=True),
    Col("encrypted values", keep=True, justify="right"),
    Col("audit MACs", keep=True, justify="right"),
)


INSTANCE_COLUMNS = (
    Col("instance", keep=True),
    Col("active key", keep=True),
    Col("can read"),
    Col("safe"),
)


def _print_status(report: dict[str, Any]) -> None:
    rows = [
        (row["key_id"], row["state"], str(row["values"]), str(row["audit_macs"]))
        for row in report["keys"]
    ]
    console.print(table(KEY_COLUMNS, rows))
    removable = [
        row["key_id"]
        for row in report["keys"]
        if row["state"] == "retired" and not row["values"] and not row["audit_macs"]
    ]
    if report["pending"]:
        line(
            f"{report['pending']} values/entries not yet under the active key: run "
            "`paysvc keys rotate`"
        )
    if removable:
        line("no longer used, may be removed from ENCRYPTION_KEYS_RETIRED: " + ", ".join(removable))
    if report["instances"]:
        rows = [
            (
                i["instance_id"],
                i["active_key_id"],
                ", ".join(i["readable_key_ids"]),
                "yes" if i["safe"] else "no: cannot read " + ", ".join(i["cannot_read"]),
            )
            for i in report["instances"]
        ]
        console.print(table(INSTANCE_COLUMNS, rows))
        if any(not i["safe"] for i in report["instances"]):
            console.print(
                "[red]an instance cannot read data others write: give it the key "
                "(ENCRYPTION_KEYS_NEXT) and restart it before making that key active anywhere"
                "[/red]"
            )
    if any(row["state"] == "unknown" for row in report["keys"]):
        console.print(
            "[red]some data is under a key that is not configured: it cannot be read[/red]"
        )


@app.command()
def status(
    as_json: JsonOption = False,
) -> None:
    """Encrypted values and audit MACs per key id; which key is active, which can go."""
    report = run_async(with_container(_status))
    if as_json:
        print_json(report)
    else:
        _print_status(report)


@app.command()
def rotate(
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=10_000,
            help="Rows read and re-encrypted per batch (written in shorter slices on SQLite)",
        ),
    ] = 2000,  # paysvc.keys.service.ROTATE_BATCH (not imported here: the CLI starts light)
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=16,
            help="Ranges rotated at once, each on its own connection (default: 2 on "
            "PostgreSQL; SQLite has one writer: 1)",
        ),
    ] = None,
) -> None:
    """Re-encrypt every value (and re-MAC every audit entry) under the active key.

    Safe while the service runs (each batch re-encrypted outside, then written in one short
    bulk compare-and-set); resumable (run it again after an interruption); each batch is
    audited. First roll the new key out on every instance: in ENCRYPTION_KEYS_NEXT, then as
    ENCRYPTION_KEY with the old one in ENCRYPTION_KEYS_RETIRED.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from paysvc.audit.chain import seal_pending
    from paysvc.keys import service

    with Progress(
        TextColumn("re-encrypting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("rotate", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        async def work(container: Container) -> tuple[int, dict[str, Any]]:
            done = await service.rotate(
                container.db,
                actor=OPERATOR,
                audit=container.audit,
                batch_size=batch_size,
                progress=advance,
                workers=workers,
            )
            await seal_pending(container.db, container.keyring)  # chain the rotation's entries
            return done, await _status(container)

        done, report = run_async(with_container(work))
    line(f"rewrote {done} values/entries; active key {report['active_key_id']}")
    _print_status(report)
