"""`paysvc events list|redeliver`: the outbox, as operators see it."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import EXIT_USAGE, OPERATOR, JsonOption, fail, run_async, with_container
from cli.output import Col, console, line, print_json, table, when

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

app = typer.Typer(help="Outgoing events and their deliveries.", no_args_is_help=True)

# Ids, types and delivery states are always shown whole; on a narrow terminal the payment and
# at last the time are left out (named under the table).
EVENT_COLUMNS = (
    Col("id", keep=True),
    Col("type", keep=True),
    Col("payment", keep=True, priority=2),
    Col("deliveries", keep=True),
    Col("created", keep=True, priority=1),
)


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
    as_json: JsonOption = False,
) -> None:
    """List the most recent events with the state of each delivery."""
    from paysvc.events.repository import EventFilter
    from paysvc.events.schemas import render_event

    async def work(container: Container) -> list[dict[str, Any]]:
        page = await container.events.list(
            OPERATOR,
            EventFilter(status=status.value if status else None, payment_id=payment),
            limit=limit,
            starting_after=None,
        )
        return [render_event(i.event, i.deliveries) for i in page.items]

    events = run_async(with_container(work))
    if as_json:
        print_json(events)
        return
    rows = [
        (
            e["id"],
            e["type"],
            e["payment_id"],
            "\n".join(_delivery(d) for d in e["deliveries"]) or "-",
            when(e["created_at"]),
        )
        for e in events
    ]
    console.print(table(EVENT_COLUMNS, rows))


def _delivery(d: dict[str, Any]) -> str:
    """`order: dead (24, last 500)`"""
    last = d["last_status_code"] or d["last_error"]
    detail = f", last {last}" if d["status"] != "delivered" and last else ""
    return f"{d['destination']}: {d['status']} ({d['attempts']}{detail})"


@app.command()
def redeliver(
    event_id: Annotated[str | None, typer.Argument(help="evt_… id")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead delivery")] = False,
    as_json: JsonOption = False,
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
    line(f"{queued} deliveries queued again")
