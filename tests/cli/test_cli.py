"""The operator CLI through typer's CliRunner, on the same database the HTTP app uses."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from paysvc.auth.principal import Role
from paysvc.auth.tokens import TokenVerifier
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET, SERVICE, Api

runner = CliRunner()


def cli_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
        "COLUMNS": "200",
    }


def paysvc(database_url: str, *args: str) -> Result:
    return runner.invoke(app, list(args), env=cli_env(database_url))


async def apaysvc(database_url: str, *args: str) -> Result:
    """The CLI runs its own event loop: call it from a thread inside async tests."""
    return await asyncio.to_thread(paysvc, database_url, *args)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


# -- token mint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["customer", "service", "admin"])
def test_token_mint_verifies(database_url: str, role: str) -> None:
    result = paysvc(database_url, "token", "mint", "--sub", "42", "--role", role, "--ttl", "15m")
    assert result.exit_code == 0, result.output
    claims = TokenVerifier(JWT_SECRET).verify(result.stdout.strip())
    assert (claims.subject, claims.role) == ("42", Role(role))
    lifetime = claims.expires_at - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=14) < lifetime <= dt.timedelta(minutes=15)


async def test_minted_token_works_against_the_api(api: Api, database_url: str) -> None:
    result = await apaysvc(database_url, "token", "mint", "--sub", "17")
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
    payment = await api.create(headers)
    assert payment["customer_id"] == "17"


@pytest.mark.parametrize(
    "args",
    [
        ["--sub", "1", "--ttl", "abc"],
        ["--sub", "1", "--ttl", "15"],
        ["--sub", "1", "--ttl", "-5m"],
        ["--sub", "1", "--ttl", "0s"],
        ["--sub", "1", "--role", "superuser"],
        ["--role", "admin"],
    ],
)
def test_token_mint_usage_errors_exit_2(database_url: str, args: list[str]) -> None:
    result = paysvc(database_url, "token", "mint", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


# -- payments list / show ----------------------------------------------------------------------


@pytest.fixture
async def seeded(api: Api) -> dict[str, Any]:
    """A captured USD payment of 17, a pending JPY payment of 55, an authorized one of 17."""
    captured = await api.paid(order_id="A")
    pending = await api.create(SERVICE, customer_id="55", order_id="B", currency="jpy", amount=500)
    authorized = await api.paid(capture_method="manual", order_id="C")
    return {"captured": captured, "pending": pending, "authorized": authorized}


async def test_payments_list_json_and_filters(seeded: dict[str, Any], database_url: str) -> None:
    result = await apaysvc(database_url, "payments", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [p["id"] for p in listed] == [
        seeded["authorized"]["id"],
        seeded["pending"]["id"],
        seeded["captured"]["id"],
    ]
    assert listed[2] == seeded["captured"]  # the same rendering as the API

    async def ids(*args: str) -> list[str]:
        out = await apaysvc(database_url, "payments", "list", "--json", *args)
        assert out.exit_code == 0, out.output
        return [p["id"] for p in json.loads(out.stdout)]

    assert await ids("--status", "captured") == [seeded["captured"]["id"]]
    assert await ids("--customer", "55") == [seeded["pending"]["id"]]
    assert await ids("--order", "C") == [seeded["authorized"]["id"]]
    assert await ids("--customer", "17", "--status", "pending") == []
    assert len(await ids("--limit", "2")) == 2


async def test_payments_list_table(seeded: dict[str, Any], database_url: str) -> None:
    result = await apaysvc(database_url, "payments", "list")
    assert result.exit_code == 0, result.output
    for payment in seeded.values():
        assert payment["id"] in result.stdout
    assert "19.99 USD" in result.stdout and "500 JPY" in result.stdout
    assert "authorized" in result.stdout


async def test_payments_list_table_keeps_ids_whole_on_80_columns(
    seeded: dict[str, Any], database_url: str
) -> None:
    result = await asyncio.to_thread(
        runner.invoke, app, ["payments", "list"], env={**cli_env(database_url), "COLUMNS": "80"}
    )
    for payment in seeded.values():
        assert payment["id"] in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--status", "paid"], ["--limit", "0"], ["--limit", "101"], ["--limit", "x"], ["--nope"]],
)
def test_payments_list_usage_errors_exit_2(database_url: str, args: list[str]) -> None:
    result = paysvc(database_url, "payments", "list", *args)
    assert result.exit_code == 2, result.output


async def test_payments_show(seeded: dict[str, Any], database_url: str) -> None:
    payment = seeded["captured"]
    as_json = await apaysvc(database_url, "payments", "show", payment["id"], "--json")
    assert as_json.exit_code == 0
    shown = json.loads(as_json.stdout)
    [charge] = shown.pop("operations")  # the money ledger, oldest first
    assert shown == payment
    assert (charge["kind"], charge["status"], charge["amount"]) == ("charge", "succeeded", 1999)
    table = await apaysvc(database_url, "payments", "show", payment["id"])
    assert table.exit_code == 0
    assert payment["id"] in table.stdout and "captured" in table.stdout
    assert charge["id"] in table.stdout and "succeeded" in table.stdout


def test_payments_show_missing_is_exit_1_with_one_line(database_url: str) -> None:
    result = paysvc(database_url, "payments", "show", "pay_missing")
    assert result.exit_code == 1
    assert "No such payment" in one_error_line(result)
    assert result.stdout == ""


def test_database_problems_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    unmigrated = f"sqlite:///{tmp_path}/empty.db"
    result = paysvc(unmigrated, "payments", "list")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "paysvc db upgrade" in line and "SELECT" not in line
    unreachable = "postgresql://postgres@127.0.0.1:1/nothing"
    for args in (["payments", "show", "pay_x"], ["db", "current"]):
        result = paysvc(unreachable, *args)
        assert result.exit_code == 1
        assert "database" in one_error_line(result)


# -- db ------------------------------------------------------------------------------------------


def test_db_upgrade_current_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/scratch.db"
    assert "base" in paysvc(url, "db", "current").stdout
    upgraded = paysvc(url, "db", "upgrade")
    assert upgraded.exit_code == 0 and "(head)" in upgraded.stdout
    current = paysvc(url, "db", "current")
    assert current.exit_code == 0 and "(head)" in current.stdout
    assert paysvc(url, "payments", "list", "--json").stdout.strip() == "[]"
    downgraded = paysvc(url, "db", "downgrade", "base")
    assert downgraded.exit_code == 0 and "base" in downgraded.stdout
    assert "base" in paysvc(url, "db", "current").stdout
    assert paysvc(url, "payments", "list").exit_code == 1  # the tables are gone
    assert paysvc(url, "db", "upgrade", "head").exit_code == 0


def test_db_unknown_revision_is_one_line(tmp_path: Path) -> None:
    result = paysvc(f"sqlite:///{tmp_path}/scratch.db", "db", "downgrade", "nosuchrev")
    assert result.exit_code == 1
    assert "nosuchrev" in one_error_line(result)


def test_db_downgrade_needs_a_revision(tmp_path: Path) -> None:
    assert paysvc(f"sqlite:///{tmp_path}/s.db", "db", "downgrade").exit_code == 2


# -- --help everywhere ---------------------------------------------------------------------------

COMMANDS = [
    [],
    ["serve"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade"],
    ["token"],
    ["token", "mint"],
    ["payments"],
    ["payments", "list"],
    ["payments", "show"],
    ["refunds"],
    ["refunds", "create"],
    ["refunds", "list"],
    ["reconcile"],
    ["report"],
    ["idempotency"],
    ["idempotency", "purge"],
    ["keys"],
    ["keys", "generate"],
    ["keys", "status"],
    ["keys", "rotate"],
    ["audit"],
    ["audit", "verify"],
    ["audit", "head"],
    ["audit", "export"],
    ["admin"],
    ["admin", "rebuild-rollup"],
    ["events"],
    ["events", "list"],
    ["events", "redeliver"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "paysvc" for c in COMMANDS])
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_every_command_is_in_the_help_list() -> None:
    import typer.main

    group = typer.main.get_command(app)
    listed = {" ".join(c) for c in COMMANDS}

    def walk(command: Any, prefix: list[str]) -> None:
        assert " ".join(prefix) in listed, f"add {prefix} to COMMANDS"
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(group, [])
