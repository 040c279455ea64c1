"""`paysvc payments list|show`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Column, Table

from cli.common import OPERATOR, console, print_json, run_async, with_container
from paysvc.bootstrap import Container
from paysvc.money import Money
from paysvc.operations.schemas import render_operation
from paysvc.payments.repository import PaymentFilter
from paysvc.payments.schemas import render_payment
from paysvc.payments.states import PaymentStatus

app = typer.Typer(help="Inspect payments.", no_args_is_help=True)


@app.command("list")
def list_payments(
    status: Annotated[
        PaymentStatus | None, typer.Option(help="Only payments in this status")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's payments")] = None,
    order: Annotated[str | None, typer.Option(help="Only this order's payments")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the most recent payments."""

    async def work(container: Container) -> list[dict[str, Any]]:
        page = await container.payments.list(
            OPERATOR,
            PaymentFilter(
                customer_id=customer, order_id=order, status=status.value if status else None
            ),
            limit=limit,
            starting_after=None,
        )
        return [render_payment(p) for p in page.items]

    payments = run_async(with_container(work))
    if as_json:
        print_json(payments)
        return
    # The id is what an operator copies into `payments show`: never cut it short.
    widest = max((len(p["id"]) for p in payments), default=2)
    status_width = max((len(p["status"]) for p in payments), default=6)
    table = Table(
        Column("id", no_wrap=True, min_width=widest),
        *("order", "customer", "amount", "captured", "refunded"),
        Column("status", no_wrap=True, min_width=status_width),
        "created",
    )
    for p in payments:
        table.add_row(
            p["id"],
            p["order_id"],
            p["customer_id"],
            Money(p["amount"], p["currency"]).display(),
            Money(p["amount_captured"], p["currency"]).display(),
            Money(p["amount_refunded"], p["currency"]).display(),
            p["status"],
            p["created_at"],
        )
    console.print(table)


@app.command("show")
def show(
    payment_id: Annotated[str, typer.Argument(help="pay_… id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one payment, with its gateway operations (the money ledger), oldest first."""

    async def work(container: Container) -> dict[str, Any]:
        payment = render_payment(await container.payments.get(OPERATOR, payment_id))
        operations = await container.payments.operations(OPERATOR, payment_id)
        return {**payment, "operations": [render_operation(op) for op in operations]}

    payment = run_async(with_container(work))
    if as_json:
        print_json(payment)
        return
    operations = payment.pop("operations")
    table = Table("field", "value", show_header=False)
    for key, value in payment.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    ledger = Table("operation", "kind", "amount", "status", "tries", "created", title="ledger")
    for op in operations:
        ledger.add_row(
            op["id"],
            op["kind"],
            str(op["amount"]),
            op["status"],
            str(op["attempts"]),
            op["created_at"],
        )
    console.print(ledger if operations else "no gateway operations")
