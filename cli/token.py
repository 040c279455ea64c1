"""`paysvc token mint`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import duration, settings, usage_error
from paysvc.auth.principal import Role

app = typer.Typer(help="Access tokens for operators and local use.", no_args_is_help=True)


@app.command()
def mint(
    sub: Annotated[str, typer.Option("--sub", help="Principal id (customer id or service name)")],
    role: Annotated[Role, typer.Option("--role")] = Role.CUSTOMER,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime, e.g. 15m, 1h, 7d")] = "1h",
) -> None:
    """Print a signed HS256 access token (uses JWT_SECRET_KEY)."""
    from paysvc.auth.tokens import TokenVerifier
    from paysvc.clock import SystemClock

    lifetime = duration(ttl, "--ttl")
    if lifetime.total_seconds() <= 0:
        usage_error("--ttl", "must be longer than 0 (the token would be born expired)")
    config = settings()
    verifier = TokenVerifier(config.jwt_secret_key, config.jwt_issuer, config.jwt_audience)
    typer.echo(verifier.mint(sub, role, lifetime, SystemClock().now()))
