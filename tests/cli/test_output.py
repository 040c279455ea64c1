"""What an operator sees at 80 columns and when things go wrong: whole ids and amounts, one-line
summaries and failures, JSON errors with --json, exit 2 for every usage error."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

import cli.reconcile
from cli.main import app
from tests.cli.test_cli import cli_env
from tests.conftest import BACKEND, SERVICE, Api
from tests.refunds.helpers import refund, sandbox

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
OTHER_KEY = base64.b64encode(b"w" * 32).decode()


def run(database_url: str, *args: str, columns: int = 80, **env: str) -> Result:
    return runner.invoke(
        app, list(args), env={**cli_env(database_url), "COLUMNS": str(columns), **env}
    )


async def arun(database_url: str, *args: str, columns: int = 80, **env: str) -> Result:
    return await asyncio.to_thread(run, database_url, *args, columns=columns, **env)


def only_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def json_error(result: Result) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(only_line(result.stderr))["error"]
    assert set(error) >= {"type", "code", "message"}
    return error


def assert_fits(text: str, columns: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > columns]
    assert not too_wide, "\n".join(too_wide)


def rows_of(text: str, ids: list[str]) -> list[str]:
    """The output line of each id: every row on one line."""
    found = []
    for id_ in ids:
        lines = [line for line in text.splitlines() if id_ in line]
        assert len(lines) == 1, text
        found.append(lines[0])
    return found


# -- tables at 80 columns ------------------------------------------------------------------------


@pytest.fixture
async def payments(api: Api) -> list[dict[str, Any]]:
    """A partially refunded 999,999.99 USD payment (the widest status and amount), a JPY one,
    an authorized one, with a long order id and customer."""
    big = await api.paid(
        headers=SERVICE,
        order_id="order-" + "9" * 40,
        customer_id="customer-with-a-long-name-0123456789",
        amount=99999999,
    )
    await refund(api, big["id"], amount=100)
    yen = await api.paid(
        headers=SERVICE, order_id="B", customer_id="55", amount=500, currency="jpy"
    )
    held = await api.paid(capture_method="manual", order_id="C")
    return [big, yen, held]


async def test_payments_list_at_80_columns_shows_whole_ids_and_amounts(
    payments: list[dict[str, Any]], database_url: str
) -> None:
    result = await arun(database_url, "payments", "list")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    big, yen, held = rows_of(result.stdout, [p["id"] for p in payments])
    assert "999999.99 USD" in big and "partially_refunded" in big
    assert "500 JPY" in yen and "captured" in yen
    assert "19.99 USD" in held and "authorized" in held
    # The widest amount and status leave no room for the time: it is left out, and said so.
    caption = result.stdout[result.stdout.index("not shown at 80 columns") :]
    assert "created" in caption and "order" in caption
    assert "…" not in result.stdout

    # Narrower rows keep the time, without seconds.
    held_only = await arun(database_url, "payments", "list", "--status", "authorized")
    row = rows_of(held_only.stdout, [payments[2]["id"]])[0]
    assert "19.99 USD" in row
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d$", row.rstrip()), row

    wide = await arun(database_url, "payments", "list", columns=200)
    big_wide = rows_of(wide.stdout, [payments[0]["id"]])[0]
    assert "order-" + "9" * 40 in big_wide and "1.00 USD" in big_wide  # refunded, whole
    assert re.search(r"\d\d:\d\d:\d\d", big_wide) and "not shown" not in wide.stdout


async def test_refunds_list_and_show_at_80_columns(
    payments: list[dict[str, Any]], database_url: str
) -> None:
    big = payments[0]
    listed = await arun(database_url, "refunds", "list", big["id"])
    assert listed.exit_code == 0, listed.output
    assert_fits(listed.stdout)
    refund_id = json.loads(
        (await arun(database_url, "refunds", "list", big["id"], "--json")).stdout
    )[0]["id"]
    assert "1.00 USD" in rows_of(listed.stdout, [refund_id])[0]

    shown = await arun(database_url, "payments", "show", big["id"])
    assert shown.exit_code == 0
    assert_fits(shown.stdout)
    assert big["id"] in shown.stdout and "999999.99 USD" in shown.stdout


async def test_reconcile_table_fits_and_its_summary_is_one_line_in_a_pipe(
    api: Api, container: Any, database_url: str
) -> None:
    payment = await api.paid(capture_method="manual")
    await sandbox(container).force_capture(payment["gateway_reference"])
    result = await arun(database_url, "reconcile", "--since", "1h", "--apply", columns=80)
    assert result.exit_code == 3, result.output
    table, summary = result.stdout.rstrip().rsplit("\n", 1)
    assert_fits(table)  # the summary is one line, as long as it is
    assert summary.startswith("checked 1 payments and 0 refunds: 1 drifted, 1 fixed")
    assert "move to captured" in table
    assert payment["id"] in rows_of(result.stdout, [payment["id"]])[0]
    narrow = await arun(database_url, "reconcile", "--since", "1h", "--apply", columns=30)
    # CliRunner's output is not a terminal: the summary is never wrapped, however narrow.
    summary = [line for line in narrow.stdout.splitlines() if line.startswith("checked ")]
    assert summary == [
        "checked 1 payments and 0 refunds: 0 drifted, 0 fixed, 0 waiting webhook events applied"
    ]


# -- version, completion, help -------------------------------------------------------------------


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout.strip()) == (0, f"paysvc {version('paysvc')}")


def test_completion_script_is_offered() -> None:
    # The shell named, not detected: CI runs without a terminal or a parent shell to detect.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
        result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_PAYSVC_COMPLETE" in result.stdout
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_completion_completes_commands() -> None:
    result = runner.invoke(
        app,
        [],
        prog_name="paysvc",
        env={"_PAYSVC_COMPLETE": "complete_bash", "COMP_WORDS": "paysvc pay", "COMP_CWORD": "1"},
    )
    assert "payments" in result.stdout.split()


# -- failures: one line, JSON with --json, exit codes ---------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["idempotency", "purge", "--older-than", "soon"],
        ["idempotency", "purge", "--older-than", "1h"],  # below the 24 h the service keeps
        ["reconcile", "--since", "soon"],
        ["payments", "list", "--limit", "0"],
        ["payments", "list", "--status", "paid"],
        ["report", "--from", "yesterday"],
        ["report", "--from", "2026-11-02", "--to", "2026-11-01"],
        ["payments", "list", "--nope"],
    ],
)
def test_usage_errors_exit_2_with_one_line_or_json(database_url: str, args: list[str]) -> None:
    text = run(database_url, *args)
    assert text.exit_code == 2, text.output
    assert only_line(text.stderr).startswith("error: ")
    assert text.stdout == ""
    as_json = run(database_url, *args, "--json")
    assert as_json.exit_code == 2, as_json.output
    error = json_error(as_json)
    assert error["type"] == "usage_error" and as_json.stdout == ""


def test_domain_failure_with_json_is_a_json_error(database_url: str) -> None:
    result = run(database_url, "payments", "show", "pay_missing", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json_error(result)
    assert (error["type"], error["code"]) == ("not_found", "resource_missing")


async def test_wrong_encryption_key_is_one_line_naming_the_key_id(
    api: Api, database_url: str
) -> None:
    payment = await api.create(description="a teapot")
    result = await arun(database_url, "payments", "show", payment["id"], ENCRYPTION_KEY=OTHER_KEY)
    assert result.exit_code == 1
    line = only_line(result.stderr)
    assert re.match(
        r"error: ENCRYPTION_KEY cannot decrypt stored data \(key id [0-9a-f]{12}\)", line
    ), line
    as_json = await arun(
        database_url, "payments", "show", payment["id"], "--json", ENCRYPTION_KEY=OTHER_KEY
    )
    assert json_error(as_json)["code"] == "encryption_key_mismatch"


def test_missing_unmigrated_and_unreachable_databases_are_told_apart(tmp_path: Path) -> None:
    missing = run(f"sqlite:///{tmp_path}/nothing.db", "payments", "list")
    assert missing.exit_code == 1
    assert "does not exist" in only_line(missing.stderr)
    assert not (tmp_path / "nothing.db").exists()  # not created as a side effect

    (tmp_path / "empty.db").touch()
    unmigrated = run(f"sqlite:///{tmp_path}/empty.db", "payments", "list")
    assert unmigrated.exit_code == 1
    assert "is not migrated: run `paysvc db upgrade`" in only_line(unmigrated.stderr)

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        url = f"postgresql://postgres@127.0.0.1:{port}/paysvc"
        for args in (["payments", "list"], ["db", "current"]):
            refused = run(url, *args)
            assert refused.exit_code == 1
            assert "is unreachable (connection refused)" in only_line(refused.stderr)
        as_json = run(url, "payments", "list", "--json")
        assert json_error(as_json)["code"] == "database_error"


@pytest.mark.skipif(BACKEND != "postgresql", reason="needs the PostgreSQL server of the run")
def test_a_postgresql_database_that_does_not_exist(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(database="paysvc_no_such_database")
    result = run(url.render_as_string(hide_password=False), "payments", "list")
    assert result.exit_code == 1
    assert "paysvc_no_such_database) does not exist" in only_line(result.stderr)


def test_serve_on_a_busy_port_is_one_line(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(database_url, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.exit_code == 1
    not_logs = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert not_logs == [f"error: port {port} is in use (another paysvc serve?)"]
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


async def test_reconcile_shows_progress_on_a_terminal_only(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await api.paid(order_id=f"progress-{n}")
    terminal = io.StringIO()
    monkeypatch.setattr(
        cli.reconcile, "err_console", Console(file=terminal, force_terminal=True, width=80)
    )
    result = await arun(database_url, "reconcile", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "checked 3 payments and refunds, 0 drifted" in terminal.getvalue()
    assert "checked 3 payments and 0 refunds: 0 drifted" in result.stdout
    # Not a terminal (cron, a pipe): no progress output at all.
    assert "refunds, 0 drifted" not in result.stderr


def test_help_and_completion_load_no_service_layer() -> None:
    """The lazy-import pattern (cli/common.py): importing the CLI, which `--help` and every
    completion do, loads none of the heavy libraries; commands import them when they run.
    (The start-up time itself is measured by scripts/bench_cli_startup, not here.)"""
    heavy = ["sqlalchemy", "aiohttp", "alembic", "stripe", "marshmallow", "cryptography", "jwt"]
    probe = (
        "import sys, cli.main; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]", "imported at the top of a cli module: " + result.stdout
