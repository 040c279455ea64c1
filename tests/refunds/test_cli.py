"""`paysvc refunds create|list` on the same database the HTTP app sees."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner, Result

from cli.main import app
from paysvc.bootstrap import Container
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET, Api
from tests.refunds.helpers import assert_books_agree, books, refund


async def paysvc(database_url: str, *args: str) -> Result:
    """Run the CLI in a thread (it runs its own event loop) against the test's database."""
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def one_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


async def test_create_and_list(api: Api, container: Container, database_url: str) -> None:
    payment = await api.paid()
    created = await paysvc(
        database_url, "refunds", "create", payment["id"], "--amount", "500", "--yes", "--json"
    )
    assert created.exit_code == 0, created.output
    body: dict[str, Any] = json.loads(created.stdout)
    assert (body["amount"], body["status"], body["payment_id"]) == (500, "succeeded", payment["id"])
    seen = await api.get(f"/refunds/{body['id']}")  # the HTTP app sees the CLI's refund
    assert seen == body
    assert (await api.get(f"/payments/{payment['id']}"))["amount_refunded"] == 500

    via_http = await refund(api, payment["id"], amount=300)
    rest = await paysvc(
        database_url, "refunds", "create", payment["id"], "--reason", "duplicate", "--yes"
    )
    assert rest.exit_code == 0, rest.output
    assert "11.99 USD" in rest.output and "succeeded" in rest.output
    done = await api.get(f"/payments/{payment['id']}")
    assert (done["status"], done["amount_refunded"]) == ("refunded", 1999)

    listed = await paysvc(database_url, "refunds", "list", payment["id"], "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["amount"] for r in rows] == [1199, 300, 500]
    assert rows[0]["reason"] == "duplicate"
    assert rows[1]["id"] == via_http["id"]

    table = await paysvc(database_url, "refunds", "list", payment["id"])
    assert table.exit_code == 0
    assert body["id"] in table.output and "5.00 USD" in table.output
    assert_books_agree(await books(container, payment["id"]))


async def test_refuses_without_confirmation_when_not_interactive(
    api: Api, container: Container, database_url: str
) -> None:
    payment = await api.paid()
    result = await paysvc(database_url, "refunds", "create", payment["id"])
    assert result.exit_code == 1
    assert "use --yes to confirm non-interactively" in one_line(result)
    assert (await books(container, payment["id"])).refund_rows == 0


async def test_errors_are_one_line_and_change_nothing(
    api: Api, container: Container, database_url: str
) -> None:
    payment = await api.paid()
    too_much = await paysvc(
        database_url, "refunds", "create", payment["id"], "--amount", "5000", "--yes"
    )
    assert too_much.exit_code == 1
    assert "1999 remains refundable" in one_line(too_much)

    pending = await api.create(order_id="2")
    not_captured = await paysvc(database_url, "refunds", "create", pending["id"], "--yes")
    assert not_captured.exit_code == 1
    assert "Cannot refund a payment that is pending" in one_line(not_captured)

    missing = await paysvc(database_url, "refunds", "list", "pay_nope")
    assert missing.exit_code == 1
    assert "No such payment" in one_line(missing)

    bad_reason = await paysvc(
        database_url, "refunds", "create", payment["id"], "--reason", "bored", "--yes"
    )
    assert bad_reason.exit_code == 2
    zero = await paysvc(database_url, "refunds", "create", payment["id"], "--amount", "0", "--yes")
    assert zero.exit_code == 2
    assert (await books(container, payment["id"])).refund_rows == 0


async def test_failed_refund_exits_non_zero(
    api: Api, container: Container, database_url: str
) -> None:
    payment = await api.paid("pm_card_refundFail")
    result = await paysvc(database_url, "refunds", "create", payment["id"], "--yes")
    assert result.exit_code == 1
    assert "failed at the gateway: declined" in one_line(result)
    ledgers = await books(container, payment["id"])
    assert (ledgers.refund_rows, ledgers.payment_refunded) == (1, 0)
