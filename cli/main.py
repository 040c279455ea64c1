"""The `paysvc` operator CLI: one sub-app per resource.

Importing this module (what `paysvc --help` and shell completion do) stays cheap: command
modules import the service layer inside their functions (see cli/common.py).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer import _click as click  # typer vendors click (0.29+): its exceptions, context
from typer.core import TyperGroup

from cli import (
    admin,
    audit,
    db,
    events,
    idempotency,
    keys,
    payments,
    reconcile,
    refunds,
    report,
    serve,
    token,
)
from cli.common import EXIT_DOMAIN, EXIT_USAGE
from cli.output import render_error


class PaysvcGroup(TyperGroup):
    """Usage errors exit 2 as one line (JSON on stderr with `--json`); an unexpected exception
    is one line too (PAYSVC_TRACEBACK=1 shows the traceback)."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv
        try:
            # Not standalone, typer returns the exit code of a typer.Exit (commands return None).
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except Exception as error:
            code = exit_code(error, as_json=as_json)
        if standalone_mode:
            sys.exit(code)
        return code


def exit_code(error: Exception, *, as_json: bool = False) -> int:
    """The exit code of a command that raised `error`, once its one line is printed (the
    serving process of `paysvc serve` ends through here too: cli/server.py)."""
    if isinstance(error, typer.Exit):  # its line is printed
        code: int = error.exit_code
        return code
    if isinstance(error, click.exceptions.NoArgsIsHelpError):  # `paysvc payments`: the help
        return EXIT_USAGE
    if isinstance(error, click.exceptions.UsageError):
        where = f" ({error.ctx.command_path})" if error.ctx else ""
        render_error(
            f"{error.format_message()}{where}; see --help",
            type_="usage_error",
            code="invalid_usage",
            as_json=as_json,
        )
        return EXIT_USAGE
    if isinstance(error, click.exceptions.ClickException):
        render_error(error.format_message(), as_json=as_json)
        return error.exit_code
    if isinstance(error, typer.Abort):
        render_error("aborted", as_json=as_json)
        return EXIT_DOMAIN
    if os.environ.get("PAYSVC_TRACEBACK"):
        raise error
    render_error(
        f"unexpected {type(error).__name__}: {error} (PAYSVC_TRACEBACK=1 for details)",
        type_="api_error",
        code="internal",
        as_json=as_json,
    )
    return EXIT_DOMAIN


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"paysvc {version('paysvc')}")
        raise typer.Exit()


app = typer.Typer(
    name="paysvc",
    help="paysvc operator CLI.",
    cls=PaysvcGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """paysvc operator CLI."""


app.command("serve")(serve.serve)
app.command("reconcile")(reconcile.reconcile)
app.command("report")(report.report)
app.add_typer(db.app, name="db")
app.add_typer(token.app, name="token")
app.add_typer(payments.app, name="payments")
app.add_typer(refunds.app, name="refunds")
app.add_typer(idempotency.app, name="idempotency")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(admin.app, name="admin")
app.add_typer(events.app, name="events")


def main() -> None:
    """The `paysvc` command (its console script): this process is the CLI's own, so `serve`
    replaces it with the serving process (a CliRunner in a test process serves in place)."""
    serve.REPLACE_PROCESS = True
    app()


if __name__ == "__main__":
    main()
