"""Reconciliation of refunds: a pending refund is settled with the gateway's word (or resent
with the same idempotency key when the gateway never saw it), once, by the CLI, by the
background reconciler, and by two reconcilers at once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.payments.models import PaymentEvent
from paysvc.web.app import create_app
from tests.conftest import Api, make_settings
from tests.reconcile.test_reconcile import FakeClock, cli_json
from tests.refunds.helpers import (
    assert_books_agree,
    books,
    lost_refund,
    operation_of,
    refund,
    sandbox,
)
from tests.stripe_events import (
    charge_refunded,
    count_events,
    deliver,
    event,
    gateway_refund,
    inbox,
    refund_object,
)
from tests.support import eventually

Factory = Callable[..., Any]


async def test_cli_reports_a_pending_refund_then_settles_it(
    api: Api, container: Container, aiohttp_client: Factory, database_url: str
) -> None:
    payment = await api.paid()
    pending = await lost_refund(aiohttp_client, container, payment["id"], 500)

    code, report = await cli_json(database_url, "--since", "1h")
    assert code == 3
    op_id = await operation_of(container, pending["id"])
    assert report["drift"] == [
        {
            "id": pending["id"],
            "object": "refund",
            "kind": "stuck_operation",
            "ours": f"refund {op_id} pending",
            "theirs": "pending",
            "action": "settle: the gateway reports succeeded",
            "fixable": True,
            "applied": False,
        }
    ]
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "pending"

    code, report = await cli_json(database_url, "--since", "1h", "--apply")
    assert code == 3
    assert [(i["id"], i["applied"]) for i in report["drift"]] == [(pending["id"], True)]
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "succeeded"
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)

    code, report = await cli_json(database_url, "--since", "1h", "--apply")
    assert (code, report["drift"]) == (0, [])
    assert (report["checked"], report["checked_refunds"]) == (1, 1)
    assert_books_agree(await books(container, payment["id"]))


async def test_refund_failed_at_the_gateway_fails_ours_and_frees_the_amount(
    api: Api, container: Container, aiohttp_client: Factory
) -> None:
    payment = await api.paid("pm_card_refundFail")
    pending = await lost_refund(aiohttp_client, container, payment["id"], 1999)
    error = await refund(api, payment["id"], amount=1, status=422)  # pending holds it all
    assert error["error"]["code"] == "amount_exceeds_refundable"

    report = await container.reconcile.run(dt.timedelta(hours=1), apply=True)
    assert [(i.id, i.theirs, i.action, i.applied) for i in report.items] == [
        (pending["id"], "failed", "settled by lookup: failed", True)
    ]
    failed = await api.get(f"/refunds/{pending['id']}")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "declined")
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("captured", 0)
    assert (await refund(api, payment["id"], amount=1999))["amount"] == 1999  # refundable again
    assert_books_agree(await books(container, payment["id"]))


async def test_background_reconciler_settles_a_stale_pending_refund(
    aiohttp_client: Factory, database_url: str
) -> None:
    """No client call settles it: the app's own reconciler does. It looks the refund up at once;
    the gateway never saw it, so it is re-sent (same key) once older than the stuck age."""
    clock = FakeClock()
    services = build_container(make_settings(database_url, RECONCILE_INTERVAL="0.02"), clock=clock)
    api = Api(await aiohttp_client(create_app(services)))
    payment = await api.paid()
    pending = await lost_refund(
        aiohttp_client, services, payment["id"], 900, clock=clock, reached=False
    )
    op_id = await operation_of(services, pending["id"])

    async def status() -> str:
        return (await services.refunds.get(SYSTEM, pending["id"])).status

    async def looked_up() -> bool:  # a pass found nothing and left it (too young to re-send)
        ops = await services.payments.operations(SYSTEM, payment["id"])
        return [op.last_error for op in ops if op.id == op_id] == ["no answer yet"]

    await eventually(looked_up)
    assert await status() == "pending"
    clock.advance(seconds=services.settings.timing.stuck_after.total_seconds() + 1)

    async def settled() -> bool:
        return await status() != "pending"

    await eventually(settled)
    assert await status() == "succeeded"
    async with services.db.transaction(write=False) as session:
        [settled] = await session.scalars(
            select(PaymentEvent).where(
                PaymentEvent.payment_id == payment["id"], PaymentEvent.type == "refund_succeeded"
            )
        )
    assert settled.actor_id == "reconciler"
    assert (await api.get(f"/payments/{payment['id']}"))["amount_refunded"] == 900


async def test_two_reconcilers_at_once_settle_a_refund_once(
    api: Api, container: Container, aiohttp_client: Factory, settings: Settings
) -> None:
    payment = await api.paid(amount=5000)
    ids = [
        (await lost_refund(aiohttp_client, container, payment["id"], 1000))["id"] for _ in range(3)
    ]
    other = build_container(settings)  # a second instance, its own engine and pool
    try:
        first, second = await asyncio.gather(
            container.reconcile.run(dt.timedelta(hours=1), apply=True),
            other.reconcile.run(dt.timedelta(hours=1), apply=True),
        )
    finally:
        await other.close()
    applied = [i.id for i in first.items + second.items if i.applied]
    assert sorted(applied) == sorted(ids)
    assert await count_events(container, payment["id"], "refund_succeeded") == 3
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 3000)
    assert_books_agree(await books(container, payment["id"]))


async def test_refund_the_gateway_never_saw_is_resent_when_stale(
    api: Api, container: Container, aiohttp_client: Factory, settings: Settings
) -> None:
    clock = FakeClock()
    services = build_container(settings, clock=clock)
    try:
        payment = await api.paid()
        pending = await lost_refund(
            aiohttp_client, services, payment["id"], 250, reached=False, clock=clock
        )
        report = await services.reconcile.run(dt.timedelta(hours=1), apply=True)
        [item] = report.items  # its answer was lost: re-sent at once, under the same key
        assert (item.id, item.kind, item.theirs, item.applied) == (
            pending["id"],
            "stuck_operation",
            "succeeded",
            True,
        )
        assert item.action == "re-sent under the same key (attempt 2)"
        assert (await services.reconcile.run(dt.timedelta(hours=1), apply=True)).items == []
    finally:
        await services.close()
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "succeeded"
    assert_books_agree(await books(container, payment["id"]))


async def test_webhooks_reconcilers_and_api_racing_on_one_payment_keep_the_books(
    api: Api,
    client: TestClient[Any, Any],
    container: Container,
    aiohttp_client: Factory,
    settings: Settings,
) -> None:
    """Refund events (duplicated), two reconcilers, a new refund and reads, all at once on one
    payment: every refund is settled once and the ledgers agree."""
    payment = await api.paid(amount=10_000)
    ours = [
        (await lost_refund(aiohttp_client, container, payment["id"], 1000))["id"] for _ in range(3)
    ]
    truths = [await gateway_refund(container, refund_id) for refund_id in ours]
    dashboard = await sandbox(container).force_refund(payment["gateway_reference"], 500, "usd")
    listed = event(
        "charge.refunded",
        charge_refunded([refund_object(t) for t in [dashboard, *reversed(truths)]]),
    )
    updates = [event("refund.updated", refund_object(t)) for t in truths]
    other = build_container(settings)
    reads: list[Any] = []

    async def read() -> None:
        reads.append(await api.get(f"/payments/{payment['id']}"))
        reads.append(await api.get(f"/payments/{payment['id']}/refunds"))

    try:
        await asyncio.gather(
            deliver(client, listed),
            deliver(client, listed),
            *(deliver(client, update) for update in updates),
            container.reconcile.run(dt.timedelta(hours=1), apply=True),
            other.reconcile.run(dt.timedelta(hours=1), apply=True),
            refund(api, payment["id"], amount=200),
            *(read() for _ in range(4)),
        )
    finally:
        await other.close()
    # A dashboard refund seen while ours were unnamed waited; the next pass books it.
    await container.reconcile.run(dt.timedelta(hours=1), apply=True)

    assert set((await inbox(container)).values()) == {"applied"}
    assert all(r["amount_refunded"] <= 10_000 for r in reads if r["object"] == "payment")
    rows = (await api.get(f"/payments/{payment['id']}/refunds"))["data"]
    assert sorted((r["amount"], r["status"]) for r in rows) == [
        (200, "succeeded"),
        (500, "succeeded"),
        (1000, "succeeded"),
        (1000, "succeeded"),
        (1000, "succeeded"),
    ]
    assert await count_events(container, payment["id"], "refund_succeeded") == 5
    assert await count_events(container, payment["id"], "refund_recorded_from_gateway") == 1
    ledgers = await books(container, payment["id"])
    assert (ledgers.payment_refunded, ledgers.payment_status) == (3_700, "partially_refunded")
    assert_books_agree(ledgers)  # amount_refunded == succeeded refunds == the gateway's ledger
