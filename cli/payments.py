"""`paysvc payments list|show`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import OPERATOR, JsonOption, run_async, with_container
from cli.output import Col, console, fields, money, object_fields, print_json, table, when
from paysvc.payments.states import PaymentStatus

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

app = typer.Typer(help="Inspect payments.", no_args_is_help=True)

# Ids, amounts and status are always shown whole; on a narrow terminal order, customer,
# captured, refunded and at last the time are left out (named under the table).
PAYMENT_COLUMNS = (
    Col("id", keep=True),
    Col("order", priority=1, min_width=8),
    Col("customer", priority=2, min_width=8),
    Col("amount", keep=True, justify="right"),
    Col("captured", keep=True, justify="right", priority=3),
    Col("refunded", keep=True, justify="right", priority=4),
    Col("status", keep=True),
    Col("created", keep=True, priority=5),
)

# The payment's ledger under `payments show`, oldest first.
OPERATION_COLUMNS = (
    Col("operation", keep=True),
    Col("kind", keep=True),
    Col("amount", keep=True, justify="right"),
    Col("status", keep=True),
    Col("tries", keep=True, justify="right", priority=2),
    Col("created", keep=True, priority=1),
)


@app.command("list")
def list_payments(
    status: Annotated[
        PaymentStatus | None, typer.Option(help="Only payments in this status")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's payments")] = None,
    order: Annotated[str | None, typer.Option(help="Only this order's payments")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the most recent payments."""
    from paysvc.payments.repository import PaymentFilter
    from paysvc.payments.schemas import render_payment

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
    rows = [
        (
            p["id"],
            p["order_id"],
            p["customer_id"],
            money(p["amount"], p["currency"]),
            money(p["amount_captured"], p["currency"]),
            money(p["amount_refunded"], p["currency"]),
            p["status"],
            when(p["created_at"]),
        )
        for p in payments
    ]
    console.print(table(PAYMENT_COLUMNS, rows))


@app.command("show")
def show(
    payment_id: Annotated[str, typer.Argument(help="pay_… id")],
    as_json: JsonOption = False,
) -> None:
    """Show one payment, with its gateway operations (the money ledger), oldest first."""
    from paysvc.operations.schemas import render_operation
    from paysvc.payments.schemas import render_payment

    async def work(container: Container) -> dict[str, Any]:
        payment = render_payment(await container.payments.get(OPERATOR, payment_id))
        operations = await container.payments.operations(OPERATOR, payment_id)
        return {**payment, "operations": [render_operation(op) for op in operations]}

    payment = run_async(with_container(work))
    if as_json:
        print_json(payment)
        return
    operations = payment.pop("operations")
    console.print(fields(object_fields(payment)))
    rows = [
        (
            op["id"],
            op["kind"],
            money(op["amount"], op["currency"]),
            op["status"],
            str(op["attempts"]),
            when(op["created_at"]),
        )
        for op in operations
    ]
    console.print(table(OPERATION_COLUMNS, rows) if rows else "no gateway operations")
