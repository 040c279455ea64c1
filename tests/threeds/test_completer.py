"""The completer and a payment waiting for 3-D Secure: it looks the charge up often at first,
then less and less, settles it once the customer answered, and gives it up after a day."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from paysvc.bootstrap import Container
from paysvc.gateways.base import GatewayPayment
from paysvc.gateways.sandbox import SandboxGateway
from paysvc.operations.models import Operation
from paysvc.web.app import create_app
from tests.conftest import ADMIN, CUSTOMER, Api, make_settings
from tests.faults import Fault, faulty_container
from tests.operations.test_ledger_cases import fail_storing_once
from tests.support import ManualClock, rows
from tests.threeds.helpers import (
    RETURN_URL,
    THREE_DS,
    answer_at_gateway,
    charges,
    requires_action,
    sandbox,
    status_changes,
)


class Lookups:
    """Counts the completer's questions to the sandbox about one charge."""

    def __init__(self, sandbox: SandboxGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        inner = sandbox.retrieve_payment

        async def counted(reference: str) -> GatewayPayment:
            self.count += 1
            return await inner(reference)

        monkeypatch.setattr(sandbox, "retrieve_payment", counted)


async def charge_op(container: Container, payment_id: str) -> Operation:
    (op,) = await rows(container, Operation, Operation.payment_id == payment_id)
    return op


async def test_the_charge_operation_waits_for_the_customer(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    op = await charge_op(container, payment["id"])
    assert (op.kind, op.status, op.attempts) == ("charge", "requires_action", 1)
    assert op.gateway_reference == payment["gateway_reference"]
    assert op.next_check_at is not None
    listed = await api.get(f"/admin/payments/{payment['id']}/operations", ADMIN)
    assert [o["status"] for o in listed["data"]] == ["requires_action"]


async def test_the_completer_settles_once_the_customer_answered(
    api: Api, container: Container, clock: ManualClock
) -> None:
    payment = await requires_action(api)
    await answer_at_gateway(container, payment, True)  # nobody tells paysvc
    clock.advance(11)
    report = await container.reconcile.run_once()
    assert report.errors == []
    assert report.items == []  # the normal course of things, not drift
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured" and settled["amount_captured"] == 1999
    op = await charge_op(container, payment["id"])
    assert op.status == "succeeded" and op.attempts == 1  # looked up, never re-sent
    assert len(await charges(container, payment["id"])) == 1


async def test_checks_often_at_first_then_back_off(
    api: Api, container: Container, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = await requires_action(api)
    lookups = Lookups(sandbox(container), monkeypatch)
    # The first minute: every pass (10 s apart at first), as the customer is at the page now.
    for _ in range(5):
        clock.advance(12)
        await container.reconcile.run_once()
    assert lookups.count == 5
    # Two hours on: a check, then none for many minutes (a fifth of its age: ~24 min).
    clock.advance(2 * 3600)
    await container.reconcile.run_once()
    checked = lookups.count
    assert checked == 6
    for _ in range(20):
        clock.advance(60)
        await container.reconcile.run_once()
    assert lookups.count == checked
    clock.advance(10 * 60)
    await container.reconcile.run_once()
    assert lookups.count == checked + 1
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "requires_action"
    assert (await charge_op(container, payment["id"])).attempts == 1  # never re-sent


async def test_abandoned_after_a_day_the_payment_is_cancelled_and_the_order_released(
    api: Api, container: Container, clock: ManualClock
) -> None:
    payment = await requires_action(api)
    clock.advance(23 * 3600)
    await container.reconcile.run_once()
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "requires_action"
    clock.advance(3600 + 60)
    report = await container.reconcile.run_once()
    assert report.errors == []
    cancelled = await api.get(f"/payments/{payment['id']}")
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation_reason"] == "abandoned"
    assert cancelled["next_action"] is None
    (charge,) = await charges(container, payment["id"])
    assert charge.status == "canceled" and charge.amount_captured == 0
    ops = await rows(container, Operation, Operation.payment_id == payment["id"])
    assert sorted((o.kind, o.status) for o in ops) == [
        ("charge", "failed"),
        ("void", "succeeded"),
    ]
    assert await status_changes(container, payment["id"]) == [
        ("pending", "requires_action"),
        ("requires_action", "cancelled"),
    ]
    # The order can be paid by a new intent.
    assert (await api.paid(order_id=payment["order_id"]))["status"] == "captured"


async def test_an_answer_on_the_last_day_still_wins(
    api: Api, container: Container, clock: ManualClock
) -> None:
    payment = await requires_action(api, capture_method="manual")
    clock.advance(24 * 3600 + 60)
    await answer_at_gateway(container, payment, True)  # just before the completer gives up
    await container.reconcile.run_once()
    authorized = await api.get(f"/payments/{payment['id']}")
    assert authorized["status"] == "authorized" and authorized["amount_capturable"] == 1999


async def test_a_retried_confirm_whose_answer_was_lost_answers_requires_action(
    api: Api, container: Container, clock: ManualClock
) -> None:
    """The first confirm's response could not be stored (the instance died): the retry with
    the same Idempotency-Key re-attaches to the charge operation and answers what the first
    attempt would have — requires_action with its next_action — without charging again."""
    created = await api.create()
    path = f"/payments/{created['id']}/confirm"
    body = {"payment_method": THREE_DS, "return_url": RETURN_URL}
    headers = {**CUSTOMER, "Idempotency-Key": "confirm-3ds"}
    fail_storing_once(container)
    first = await api.post(path, body, headers)
    assert first["status"] == "requires_action"
    clock.advance(container.settings.timing.idempotency_takeover.total_seconds() + 1)
    retried = await api.client.post(path, json=body, headers=headers)
    assert retried.status == 200
    assert retried.headers.get("Idempotent-Replayed") == "true"
    answer = await retried.json()
    assert answer["status"] == "requires_action"
    assert answer["next_action"] == first["next_action"]
    assert len(await charges(container, created["id"])) == 1
    assert (await charge_op(container, created["id"])).attempts == 1


async def test_a_lost_answer_never_shown_to_the_customer_is_voided_after_a_day(
    database_url: str, aiohttp_client: Callable[..., Any]
) -> None:
    """The confirm's answer (requires_action) was lost: the payment is `processing` and the
    customer never saw the page. The completer finds the charge waiting for authentication;
    after a day it voids it: the payment fails, nothing was taken, the order is free."""
    clock = ManualClock()
    container, faulty = faulty_container(make_settings(database_url), clock)
    api = Api(await aiohttp_client(create_app(container)))
    faulty.plan("charge", Fault.LOSE_ANSWER)
    created = await api.create()
    body = {"payment_method": THREE_DS, "return_url": RETURN_URL}
    lost = await api.post(f"/payments/{created['id']}/confirm", body, status=202)
    assert lost["status"] == "processing"
    await container.reconcile.run_once()  # looks the lost answer up: waiting for the customer
    assert (await charge_op(container, created["id"])).status == "requires_action"
    assert (await api.get(f"/payments/{created['id']}"))["status"] == "processing"
    clock.advance(24 * 3600 + 60)
    report = await container.reconcile.run_once()
    assert report.errors == []
    failed = await api.get(f"/payments/{created['id']}")
    assert failed["status"] == "failed" and failed["amount_captured"] == 0
    (charge,) = await charges(container, created["id"])
    assert charge.status == "canceled"
    ops = await rows(container, Operation, Operation.payment_id == created["id"])
    assert sorted((o.kind, o.status) for o in ops) == [("charge", "failed"), ("void", "succeeded")]
    assert (await api.paid(order_id=created["order_id"]))["status"] == "captured"
    await faulty.land()
