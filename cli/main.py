"""The `paysvc` operator CLI: one sub-app per resource."""

from __future__ import annotations

import typer

from cli import (
    audit,
    db,
    events,
    idempotency,
    keys,
    payments,
    reconcile,
    refunds,
    serve,
    token,
)

app = typer.Typer(
    name="paysvc",
    help="paysvc operator CLI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.command("reconcile")(reconcile.reconcile)
app.add_typer(db.app, name="db")
app.add_typer(token.app, name="token")
app.add_typer(payments.app, name="payments")
app.add_typer(refunds.app, name="refunds")
app.add_typer(idempotency.app, name="idempotency")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(events.app, name="events")

if __name__ == "__main__":
    app()
