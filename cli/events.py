"""`paysvc events list|redeliver`: the outbox, as operators see it."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from cli.common import EXIT_USAGE, OPERATOR, console, fail, print_json, run_async, with_container
from paysvc.bootstrap import Container
from paysvc.events.repository import EventFilter
from paysvc.events.schemas import render_event

app = typer.Typer(help="Outgoing events and their deliveries.", no_args_is_help=True)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"


@app.command("list")
def list_events(
    status: Annotated[
        DeliveryStatus | None, typer.Option(help="Only events with a delivery in this status")
    ] = None,
    payment: Annotated[str | None, typer.Option(help="Only this payment's events")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the most recent events with the state of each delivery."""

    async def work(container: Container) -> list[dict[str, Any]]:
        items, _more = await container.events.list(
            OPERATOR,
            EventFilter(status=status.value if status else None, payment_id=payment),
            limit=limit,
            starting_after=None,
        )
        return [render_event(i.event, i.deliveries) for i in items]

    events = run_async(with_container(work))
    if as_json:
        print_json(events)
        return
    widest = max((len(e["id"]) for e in events), default=2)
    table = Table(
        Column("id", no_wrap=True, min_width=widest),
        "type",
        "payment",
        "deliveries",
        "created",
    )
    for event in events:
        deliveries = "\n".join(
            f"{d['destination']}: {d['status']} ({d['attempts']})"
            + (
                f" {d['last_status_code'] or d['last_error']}"
                if d["status"] != "delivered" and d["attempts"]
                else ""
            )
            for d in event["deliveries"]
        )
        table.add_row(
            event["id"], event["type"], event["payment_id"], deliveries or "-", event["created_at"]
        )
    console.print(table)


@app.command()
def redeliver(
    event_id: Annotated[str | None, typer.Argument(help="evt_… id")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead delivery")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Queue an event again for its destinations (or, with --dead, every dead delivery).
    Receivers deduplicate on the event id; a running `paysvc serve` sends them."""
    if (event_id is None) == (not dead):
        fail("give an event id or --dead (not both)", EXIT_USAGE)

    async def work(container: Container) -> int:
        if event_id is not None:
            return await container.events.redeliver(OPERATOR, event_id)
        return await container.events.redeliver_dead(OPERATOR)

    queued = run_async(with_container(work))
    if as_json:
        print_json({"id": event_id, "queued": queued})
        return
    console.print(f"{queued} deliveries queued again")
