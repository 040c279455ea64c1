"""Reconciliation: drift made on the gateway's side is reported, fixed once, and stays fixed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from typer.testing import CliRunner, Result

from cli.main import app as cli
from paysvc.audit.models import AuditEntry
from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.web.app import create_app
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET, Api, make_settings
from tests.refunds.helpers import sandbox
from tests.stripe_events import status_changes
from tests.support import eventually


class FakeClock:
    def __init__(self) -> None:
        self.current = dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += dt.timedelta(**delta)


def run_cli(database_url: str, *args: str) -> Result:
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
        "COLUMNS": "160",
    }
    return CliRunner().invoke(cli, ["reconcile", *args], env=env)


async def cli_json(database_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    # The CLI runs its own event loop: give it a thread.
    result = await asyncio.to_thread(run_cli, database_url, *args, "--json")
    return result.exit_code, json.loads(result.stdout)


async def test_gateway_side_drift_reported_fixed_then_clean(
    api: Api, container: Container, database_url: str
) -> None:
    captured_there = await api.paid(order_id="a", capture_method="manual")
    cancelled_there = await api.paid(order_id="b", capture_method="manual", amount=700)
    untouched = await api.paid(order_id="c")
    await sandbox(container).force_capture(captured_there["gateway_reference"])
    await sandbox(container).force_cancel(cancelled_there["gateway_reference"])

    code, report = await cli_json(database_url, "--since", "1h")
    assert code == 3
    drift = {item["id"]: item for item in report["drift"]}
    assert set(drift) == {captured_there["id"], cancelled_there["id"]}
    assert drift[captured_there["id"]] | {"fixable": True} == {
        "id": captured_there["id"],
        "object": "payment",
        "kind": "status",
        "ours": "authorized",
        "theirs": "captured",
        "action": "move to captured",
        "fixable": True,
        "applied": False,
    }
    assert (await api.get(f"/payments/{captured_there['id']}"))["status"] == "authorized"

    code, report = await cli_json(database_url, "--since", "1h", "--apply")
    assert code == 3
    assert all(item["applied"] for item in report["drift"])
    fixed = await api.get(f"/payments/{captured_there['id']}")
    assert fixed["status"] == "captured" and fixed["amount_captured"] == 1999
    assert (await api.get(f"/payments/{cancelled_there['id']}"))["status"] == "cancelled"
    assert await api.get(f"/payments/{untouched['id']}") == untouched
    assert (await status_changes(container, captured_there["id"]))[-1] == (
        "authorized",
        "captured",
        "reconciled: gateway reports captured",
    )
    async with container.db.transaction(write=False) as session:
        fixes = list(
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.resource_id == captured_there["id"],
                    AuditEntry.action == "payment.captured",
                )
            )
        )
    assert [(e.actor_id.split(":")[0], e.origin.split(":")[0]) for e in fixes] == [
        ("operator", "cli")
    ]  # the operator's --apply is audited as theirs

    code, report = await cli_json(database_url, "--since", "1h", "--apply")
    assert (code, report["drift"]) == (0, [])
    assert report["checked"] == 3


async def test_cli_table_and_usage_errors(
    api: Api, container: Container, database_url: str
) -> None:
    payment = await api.paid(capture_method="manual")
    await sandbox(container).force_capture(payment["gateway_reference"])
    result = await asyncio.to_thread(run_cli, database_url)
    assert result.exit_code == 3
    assert payment["id"] in result.stdout and "move to captured" in result.stdout
    assert (await asyncio.to_thread(run_cli, database_url, "--since", "soon")).exit_code == 2


async def test_timeout_payment_settles_in_run_once(api: Api, container: Container) -> None:
    payment = await api.paid("pm_card_timeout", capture_method="manual")
    report = await container.reconcile.run_once()
    assert [(i.id, i.kind, i.applied) for i in report.items] == [
        (payment["id"], "stuck_operation", True)
    ]
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "authorized" and settled["amount_capturable"] == 1999
    assert settled["gateway_reference"] is not None
    assert (await container.reconcile.run_once()).items == []


async def test_timeout_payment_settles_in_the_background(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    """No client call settles it: the app's own reconciler does."""
    fast = make_settings(database_url, RECONCILE_INTERVAL="0.05")
    services = build_container(fast)
    api = Api(await aiohttp_client(create_app(services)))
    payment = await api.paid("pm_card_timeout")
    assert payment["status"] == "processing"

    async def captured() -> bool:
        async with services.db.transaction(write=False) as session:
            row = await services.payments.load(session, SYSTEM, payment["id"])
        return row.status == "captured"

    await eventually(captured)
    assert (await status_changes(services, payment["id"]))[-1][2] == "completed by lookup"


async def test_two_reconcilers_at_once_settle_each_payment_once(
    api: Api, container: Container, settings: Settings
) -> None:
    ids = [(await api.paid("pm_card_timeout", order_id=str(n)))["id"] for n in range(4)]
    other = build_container(settings)  # a second instance, its own engine and pool
    try:
        first, second = await asyncio.gather(
            container.reconcile.run(dt.timedelta(hours=1), apply=True),
            other.reconcile.run(dt.timedelta(hours=1), apply=True),
        )
    finally:
        await other.close()
    for payment_id in ids:
        moves = [m[:2] for m in await status_changes(container, payment_id)]
        assert moves == [("pending", "processing"), ("processing", "captured")]
    applied = [i.id for i in first.items + second.items if i.applied]
    assert sorted(applied) == sorted(ids)


async def test_backwards_drift_is_reported_not_applied(api: Api, container: Container) -> None:
    payment = await api.paid(capture_method="manual")

    async def cancel_here(session: Any) -> None:
        row = await container.payments.load(session, SYSTEM, payment["id"], for_update=True)
        row.status = "cancelled"  # as if a bug or a manual edit had moved it

    await container.db.run(cancel_here)
    await sandbox(container).force_capture(payment["gateway_reference"])
    report = await container.reconcile.run(dt.timedelta(hours=1), apply=True)
    [item] = report.items
    assert (item.ours, item.theirs, item.fixable, item.applied) == (
        "cancelled",
        "captured",
        False,
        False,
    )
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "cancelled"
