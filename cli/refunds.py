"""`paysvc refunds create|list`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from cli.common import OPERATOR, console, fail, print_json, run_async, with_container
from paysvc.bootstrap import Container
from paysvc.money import Money
from paysvc.refunds.schemas import RefundReason, render_refund
from paysvc.refunds.service import NewRefund

app = typer.Typer(help="Refund captured payments.", no_args_is_help=True)


@app.command("create")
def create(
    payment_id: Annotated[str, typer.Argument(help="pay_… id")],
    amount: Annotated[
        int | None,
        typer.Option(min=1, help="Minor units; default: all that remains refundable"),
    ] = None,
    reason: Annotated[RefundReason | None, typer.Option(help="Why the money goes back")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Refund a captured payment, fully or partially (asks for confirmation unless --yes)."""
    if not yes:
        if not sys.stdin.isatty():
            fail("not confirmed: use --yes to confirm non-interactively")
        _confirm(payment_id, amount)

    async def work(container: Container) -> dict[str, Any]:
        new = NewRefund(amount=amount, reason=None if reason is None else reason.value)
        return render_refund(await container.refunds.create(OPERATOR, payment_id, new))

    refund = run_async(with_container(work))
    if as_json:
        print_json(refund)
    money = Money(refund["amount"], refund["currency"]).display()
    if refund["status"] == "failed":
        fail(f"refund {refund['id']} of {money} failed at the gateway: {refund['failure_reason']}")
    if not as_json:
        note = " (the gateway's answer was lost; reconciliation settles it)"
        console.print(
            f"refund {refund['id']} of {money} {refund['status']}"
            + (note if refund["status"] == "pending" else ""),
            highlight=False,
        )


def _confirm(payment_id: str, amount: int | None) -> None:
    async def work(container: Container) -> tuple[dict[str, Any], int]:
        payment, refundable = await container.refunds.refundable(OPERATOR, payment_id)
        return {
            "id": payment.id,
            "customer_id": payment.customer_id,
            "status": payment.status,
            "currency": payment.currency,
            "captured": payment.amount_captured,
            "refunded": payment.amount_refunded,
        }, refundable

    payment, refundable = run_async(with_container(work))

    def show(minor: int) -> str:
        return Money(minor, payment["currency"]).display()

    table = Table("field", "value", show_header=False)
    table.add_row("payment", payment["id"])
    table.add_row("customer", payment["customer_id"])
    table.add_row("status", payment["status"])
    table.add_row("captured", show(payment["captured"]))
    table.add_row("refunded", show(payment["refunded"]))
    table.add_row("refundable", show(refundable))
    console.print(table)
    if not typer.confirm(f"Refund {show(refundable if amount is None else amount)}?"):
        fail("not confirmed: nothing was refunded")


@app.command("list")
def list_refunds(
    payment_id: Annotated[str, typer.Argument(help="pay_… id")],
    limit: Annotated[int, typer.Option(min=1, max=100)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List a payment's refunds, newest first."""

    async def work(container: Container) -> list[dict[str, Any]]:
        page = await container.refunds.list(OPERATOR, payment_id, limit=limit, starting_after=None)
        return [render_refund(r) for r in page.items]

    refunds = run_async(with_container(work))
    if as_json:
        print_json(refunds)
        return
    table = Table(
        Column("id", no_wrap=True),  # copied by operators: never wrapped
        Column("amount", no_wrap=True, justify="right"),
        Column("status", no_wrap=True),
        "reason",
        "failure",
        "created",
    )
    for r in refunds:
        table.add_row(
            r["id"],
            Money(r["amount"], r["currency"]).display(),
            r["status"],
            r["reason"] or "",
            r["failure_reason"] or "",
            r["created_at"],
        )
    console.print(table)
