"""`paysvc refunds create|list`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import OPERATOR, JsonOption, fail, run_async, with_container
from cli.output import Col, console, fields, line, money, print_json, table, when
from paysvc.refunds.states import RefundReason

if TYPE_CHECKING:
    from paysvc.bootstrap import Container

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
    as_json: JsonOption = False,
) -> None:
    """Refund a captured payment, fully or partially (asks for confirmation unless --yes)."""
    from paysvc.refunds.schemas import render_refund
    from paysvc.refunds.service import NewRefund

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
    amount_text = money(refund["amount"], refund["currency"])
    if refund["status"] == "failed":
        fail(
            f"refund {refund['id']} of {amount_text} failed at the gateway: "
            f"{refund['failure_reason']}",
            type_="card_error",
            error_code="refund_failed",
        )
    if not as_json:
        note = " (the gateway's answer was lost; reconciliation settles it)"
        line(
            f"refund {refund['id']} of {amount_text} {refund['status']}"
            + (note if refund["status"] == "pending" else "")
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
        return money(minor, payment["currency"])

    console.print(
        fields(
            [
                ("payment", payment["id"]),
                ("customer", payment["customer_id"]),
                ("status", payment["status"]),
                ("captured", show(payment["captured"])),
                ("refunded", show(payment["refunded"])),
                ("refundable", show(refundable)),
            ]
        )
    )
    if not typer.confirm(f"Refund {show(refundable if amount is None else amount)}?"):
        fail("not confirmed: nothing was refunded")


@app.command("list")
def list_refunds(
    payment_id: Annotated[str, typer.Argument(help="pay_… id")],
    limit: Annotated[int, typer.Option(min=1, max=100)] = 100,
    as_json: JsonOption = False,
) -> None:
    """List a payment's refunds, newest first."""
    from paysvc.refunds.schemas import render_refund

    async def work(container: Container) -> list[dict[str, Any]]:
        page = await container.refunds.list(OPERATOR, payment_id, limit=limit, starting_after=None)
        return [render_refund(r) for r in page.items]

    refunds = run_async(with_container(work))
    if as_json:
        print_json(refunds)
        return
    rows = [
        (
            r["id"],
            money(r["amount"], r["currency"]),
            r["status"],
            r["reason"] or "",
            r["failure_reason"] or "",
            when(r["created_at"]),
        )
        for r in refunds
    ]
    console.print(table(REFUND_COLUMNS, rows))


REFUND_COLUMNS = (
    Col("id", keep=True),
    Col("amount", keep=True, justify="right"),
    Col("status", keep=True),
    Col("reason", priority=2),
    Col("failure", priority=1),
    Col("created", keep=True),
)
