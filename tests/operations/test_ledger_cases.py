"""The eight failures of issue 9, each reproduced through the real stack over a fault-injecting
gateway (tests/faults.py), and what the operations ledger makes of them now."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from paysvc.bootstrap import Container
from paysvc.gateways.base import ChargeRequest, OutcomeUnknown
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.gateways.stripe import _translate
from paysvc.operations.models import Operation
from paysvc.payments.models import Payment
from paysvc.web.app import create_app
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api, make_settings
from tests.faults import Fault, FaultyGateway, faulty_container
from tests.stripe_events import WEBHOOK_SECRET, count_events, deliver, event, refund_object
from tests.support import ManualClock, rows


@dataclass
class Env:
    container: Container
    faulty: FaultyGateway
    clock: ManualClock
    api: Api

    @property
    def client(self) -> TestClient[Any, Any]:
        return self.api.client

    def takeover(self) -> None:
        """Move past the idempotency take-over: a retry now re-attaches."""
        seconds = self.container.settings.timing.idempotency_takeover.total_seconds()
        self.clock.advance(seconds + 1)

    async def keyed(
        self, path: str, body: dict[str, Any], key: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], str | None]:
        response = await self.client.post(
            path, json=body, headers={**headers, "Idempotency-Key": key}
        )
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")

    async def reconcile(self) -> Any:
        return await self.container.reconcile.run(dt.timedelta(hours=1), apply=True)


# For tests whose fault hangs a call past the gateway deadline (Fault.LAND_LATE): a short one,
# so the caller gives up quickly. Every other test keeps the default (20 s): the deadline
# covers the sandbox's own database write, which a loaded machine can hold up past a short
# one, turning a refund the test expects settled into a pending one (seen under load: case 6
# reported `stuck_operation` instead of `refund_reversed`).
SHORT_DEADLINE = pytest.mark.parametrize("env", ["1"], indirect=True, ids=["short-deadline"])


@pytest.fixture
async def env(
    database_url: str, aiohttp_client: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Env]:
    clock = ManualClock()
    deadline = {"STRIPE_TIMEOUT_SECONDS": request.param} if hasattr(request, "param") else {}
    settings = make_settings(database_url, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, **deadline)
    container, faulty = faulty_container(settings, clock)
    api = Api(await aiohttp_client(create_app(container)))
    yield Env(container, faulty, clock, api)
    await faulty.land()  # nothing left hanging


def fail_storing_once(container: Container) -> None:
    """The instance dies after the work, before the idempotent response is stored."""
    original = container.idempotency.complete

    async def broken(*args: Any, **kwargs: Any) -> None:
        container.idempotency.complete = original  # type: ignore[method-assign]
        raise ConnectionResetError("the instance died before storing the response")

    container.idempotency.complete = broken  # type: ignore[method-assign]


async def charges(container: Container, payment_id: str) -> list[SandboxCharge]:
    return await rows(container, SandboxCharge, SandboxCharge.payment_id == payment_id)


async def gateway_refunded(container: Container, reference: str) -> int:
    refunds = await rows(container, SandboxRefund, SandboxRefund.charge_reference == reference)
    return sum(r.amount for r in refunds if r.status == "succeeded")


async def operations(container: Container, payment_id: str) -> list[Operation]:
    ops = await rows(container, Operation, Operation.payment_id == payment_id)
    return sorted(ops, key=lambda op: (op.created_at, op.id))


# -- case 1: a retried refund never refunds twice ---------------------------------------------


async def test_case1_refund_retried_after_the_instance_died_is_not_refunded_twice(
    env: Env,
) -> None:
    payment = await env.api.paid()
    path = f"/payments/{payment['id']}/refunds"
    fail_storing_once(env.container)
    status, first, _ = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert (status, first["status"]) == (201, "succeeded")

    status, early, _ = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert (status, early["error"]["code"]) == (409, "idempotency_key_in_use")
    env.takeover()
    status, retried, replayed = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert (status, replayed) == (201, "true")
    assert retried == first  # the answer a first success gave
    status, again, replayed = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert (status, again, replayed) == (201, first, "true")  # stored now

    assert await gateway_refunded(env.container, payment["gateway_reference"]) == 500
    after = await env.api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)
    assert len((await env.api.get(f"{path}", SERVICE))["data"]) == 1


@SHORT_DEADLINE
async def test_case1_refund_landing_after_the_instance_died_is_the_retrys_answer(
    env: Env,
) -> None:
    payment = await env.api.paid()
    path = f"/payments/{payment['id']}/refunds"
    env.faulty.plan("refund", Fault.LAND_LATE)  # hangs past the deadline, lands later
    fail_storing_once(env.container)
    status, first, _ = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert (status, first["status"]) == (201, "pending")
    await env.faulty.land()  # the gateway did refund, after everyone gave up

    env.takeover()
    status, retried, _ = await env.keyed(path, {"amount": 500}, "K", SERVICE)
    assert status == 201
    assert (retried["id"], retried["status"]) == (first["id"], "succeeded")
    assert env.faulty.count("refund") == 1  # settled by lookup: never sent again
    assert await gateway_refunded(env.container, payment["gateway_reference"]) == 500
    after = await env.api.get(f"/payments/{payment['id']}")
    assert after["amount_refunded"] == 500


# -- case 2: no second charge after a lookup that finds nothing -------------------------------


@SHORT_DEADLINE
async def test_case2_lookup_that_finds_nothing_resends_under_the_same_key(env: Env) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    env.faulty.plan("charge", Fault.LAND_LATE)
    processing = await env.api.post(f"/payments/{payment['id']}/confirm", {}, status=202)
    assert processing["status"] == "processing"
    env.faulty.lookup_lag = 10  # the search index lags: lookups find nothing

    report = await env.reconcile()
    [item] = report.items
    assert (item.id, item.kind, item.theirs) == (payment["id"], "stuck_operation", "succeeded")
    assert item.action == "re-sent under the same key (attempt 2)"
    await env.faulty.land()  # attempt 1 lands late: the gateway answers it from its key

    [charge] = await charges(env.container, payment["id"])
    [op] = await operations(env.container, payment["id"])
    assert (op.kind, op.status, op.attempts, charge.idempotency_key) == (
        "charge",
        "succeeded",
        2,
        op.id,
    )
    assert [key for method, key, _ in env.faulty.calls if method == "charge"] == [op.id, op.id]
    settled = await env.api.get(f"/payments/{payment['id']}")
    assert (settled["status"], settled["amount_captured"]) == ("captured", 1999)
    # A second payment for the order is refused: it is paid.
    other = await env.api.create()
    conflict = await env.api.post(
        f"/payments/{other['id']}/confirm", {"payment_method": "pm_card_visa"}, status=409
    )
    assert conflict["error"]["code"] == "order_already_paid"


# -- case 3: one bad item never stops reconciliation ------------------------------------------


async def test_case3_one_failing_item_is_reported_and_the_run_goes_on(env: Env) -> None:
    broken = await env.api.create(order_id="broken", payment_method="pm_card_visa")
    fine = await env.api.create(order_id="fine", payment_method="pm_card_visa")
    env.faulty.plan("charge", Fault.LOSE_REQUEST, Fault.LOSE_ANSWER)
    await env.api.post(f"/payments/{broken['id']}/confirm", {}, status=202)
    await env.api.post(f"/payments/{fine['id']}/confirm", {}, status=202)
    [broken_op] = await operations(env.container, broken["id"])
    env.faulty.chooser = lambda method, subject: (
        Fault.LOOKUP_ERROR if subject == broken["id"] else None
    )

    report = await env.reconcile()
    assert [e.split(":")[0] for e in report.errors] == [broken_op.id]
    assert [(i.id, i.theirs) for i in report.items] == [(fine["id"], "succeeded")]
    assert (await env.api.get(f"/payments/{fine['id']}"))["status"] == "captured"
    assert (await env.api.get(f"/payments/{broken['id']}"))["status"] == "processing"

    env.faulty.chooser = None  # the gateway answers again: a later run settles it
    env.clock.advance(env.container.settings.timing.operation_stale.total_seconds())
    await env.reconcile()
    assert (await env.api.get(f"/payments/{broken['id']}"))["status"] == "captured"
    assert len(await charges(env.container, broken["id"])) == 1


async def test_case3_a_second_charge_for_a_paid_order_is_drift_not_a_500(env: Env) -> None:
    """A charge for one of our payments that the order cannot take (another payment holds
    it): the webhook is applied, the money is reported `order_charged_twice` with a proposed
    refund by every reconcile run."""
    paid = await env.api.paid(order_id="42")
    second = await env.api.create(order_id="42", payment_method="pm_card_visa")
    stray = await env.faulty.inner.charge(  # made at the gateway behind our back
        ChargeRequest(
            payment_id=second["id"],
            order_id="42",
            amount=1999,
            currency="usd",
            capture_method="automatic",
            payment_method="pm_card_visa",
            idempotency_key="stray",
        )
    )
    intent = {
        "id": stray.reference,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 1999,
        "amount_received": 1999,
        "currency": "usd",
        "metadata": {"paysvc_payment_id": second["id"]},
    }
    result = await deliver(env.client, event("payment_intent.succeeded", intent))
    assert result["status"] == "applied"
    assert await count_events(env.container, second["id"], "order_charged_twice") == 1

    for _ in range(2):  # reported by every run
        report = await env.reconcile()
        [item] = report.items
        assert (item.id, item.kind, item.fixable) == (second["id"], "order_charged_twice", False)
        assert f"refund of 1999 usd on {stray.reference}" in item.action
    assert (await env.api.get(f"/payments/{paid['id']}"))["status"] == "captured"
    assert (await env.api.get(f"/payments/{second['id']}"))["status"] == "pending"


# -- case 4: processing settles by itself -------------------------------------------------------


async def test_case4_confirm_that_never_reached_the_gateway_settles_by_itself(
    env: Env,
) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    env.faulty.plan("charge", Fault.LOSE_REQUEST)
    await env.api.post(f"/payments/{payment['id']}/confirm", {}, status=202)
    assert await charges(env.container, payment["id"]) == []

    report = await env.container.reconcile.run_once()  # the background pass
    assert report.items == []  # too fresh to re-send in the background: looked up only
    env.clock.advance(env.container.settings.timing.stuck_after.total_seconds())
    await env.container.reconcile.run_once()
    settled = await env.api.get(f"/payments/{payment['id']}")
    assert (settled["status"], settled["amount_captured"]) == ("captured", 1999)
    assert len(await charges(env.container, payment["id"])) == 1
    assert (await env.container.reconcile.run(dt.timedelta(hours=1), apply=False)).items == []


# -- case 5: a definitive answer is never dropped --------------------------------------------


async def test_case5_capture_answer_arriving_late_is_applied(
    database_url: str, aiohttp_client: Any
) -> None:
    clock = ManualClock()
    settings = make_settings(database_url, STRIPE_TIMEOUT_SECONDS="30")
    container, faulty = faulty_container(settings, clock)
    api = Api(await aiohttp_client(create_app(container)))
    payment = await api.paid(capture_method="manual")
    faulty.plan("capture", Fault.SLOW)
    faulty.always("retrieve_payment", Fault.LOOKUP_ABSENT)

    capture = asyncio.ensure_future(
        api.post(f"/payments/{payment['id']}/capture", {"amount_to_capture": 1500}, SERVICE)
    )
    await faulty.called("capture")
    clock.advance(settings.timing.stuck_after.total_seconds() + 1)  # slower than any window
    await container.reconcile.run_once()  # the completer re-sends the capture: same key
    await faulty.land()  # the first call's answer arrives: captured
    answered = await capture
    assert (answered["status"], answered["amount_captured"]) == ("captured", 1500)
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    [charge] = await charges(container, payment["id"])
    assert (charge.status, charge.amount_captured) == ("captured", 1500)
    [_, capture_op] = await operations(container, payment["id"])
    assert (capture_op.kind, capture_op.status, capture_op.amount) == ("capture", "succeeded", 1500)


# -- case 6: a refund the gateway reverses is recorded -----------------------------------------


async def test_case6_refund_reversed_by_the_gateway_is_recorded(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    payment = await env.api.paid()
    refund = await env.api.post(
        f"/payments/{payment['id']}/refunds", {"amount": 1999}, SERVICE, status=201
    )
    assert (await env.api.get(f"/payments/{payment['id']}"))["status"] == "refunded"
    before = REGISTRY.get_sample_value("paysvc_refund_reversals_total") or 0.0
    [ours] = await rows(env.container, SandboxRefund)
    gateway = await env.faulty.inner.retrieve_refund(ours.reference)
    reversed_ = refund_object(gateway, status="failed")
    caplog.set_level(logging.WARNING)

    async def reverse_at_the_gateway(session: Any) -> None:
        await session.execute(update(SandboxRefund).values(status="failed"))
        await session.execute(update(SandboxCharge).values(amount_refunded=0))

    await env.container.db.run(reverse_at_the_gateway)
    result = await deliver(env.client, event("refund.updated", reversed_))
    assert result["status"] == "applied"

    after_refund = await env.api.get(f"/refunds/{refund['id']}")
    assert (after_refund["status"], after_refund["failure_reason"]) == ("failed", "reversed")
    after = await env.api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("captured", 0)
    assert await count_events(env.container, payment["id"], "refund_reversed") == 1
    assert REGISTRY.get_sample_value("paysvc_refund_reversals_total") == before + 1
    assert any("was reversed by the gateway" in r.getMessage() for r in caplog.records)
    audit = await env.api.get(f"/admin/audit?resource_id={refund['id']}", ADMIN)
    assert "refund.reversed" in [entry["action"] for entry in audit["data"]]
    # Refundable again.
    again = await env.api.post(
        f"/payments/{payment['id']}/refunds", {"amount": 1999}, SERVICE, status=201
    )
    assert again["status"] == "succeeded"


async def test_case6_reconciliation_finds_a_reversal_too(env: Env) -> None:
    payment = await env.api.paid()
    refund = await env.api.post(
        f"/payments/{payment['id']}/refunds", {"amount": 700}, SERVICE, status=201
    )

    async def reverse(session: Any) -> None:
        await session.execute(update(SandboxRefund).values(status="failed"))
        await session.execute(
            update(SandboxCharge)
            .where(SandboxCharge.payment_id == payment["id"])
            .values(amount_refunded=0)
        )

    await env.container.db.run(reverse)
    report = await env.reconcile()
    [item] = report.items
    assert (item.id, item.kind, item.applied) == (refund["id"], "refund_reversed", True)
    after = await env.api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("captured", 0)
    assert (await env.reconcile()).items == []


# -- case 7: IdempotencyError means "the key was used", not "nothing happened" --------------


def test_case7_stripe_idempotency_error_is_an_unknown_outcome() -> None:
    error = stripe.IdempotencyError("Keys for idempotent requests can only be used ...")
    assert isinstance(_translate(error, "refund"), OutcomeUnknown)


async def test_case7_refund_refused_with_idempotency_error_stays_counted(env: Env) -> None:
    payment = await env.api.paid()
    env.faulty.plan("refund", Fault.IDEMPOTENCY_ERROR)  # the key's work was done
    pending = await env.api.post(
        f"/payments/{payment['id']}/refunds", {"amount": 1500}, SERVICE, status=201
    )
    assert pending["status"] == "pending"
    error = await env.api.post(
        f"/payments/{payment['id']}/refunds", {"amount": 1000}, SERVICE, status=422
    )
    assert error["error"]["code"] == "amount_exceeds_refundable"  # the 1500 still counts
    await env.reconcile()
    assert (await env.api.get(f"/refunds/{pending['id']}"))["status"] == "succeeded"
    assert await gateway_refunded(env.container, payment["gateway_reference"]) == 1500


async def test_case7_confirm_refused_with_idempotency_error_keeps_its_key(env: Env) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    env.faulty.plan("charge", Fault.IDEMPOTENCY_ERROR)
    await env.api.post(f"/payments/{payment['id']}/confirm", {}, status=202)
    conflict = await env.api.post(f"/payments/{payment['id']}/confirm", {}, status=409)
    assert conflict["error"]["code"] == "operation_in_progress"  # no new key
    await env.reconcile()
    assert (await env.api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    [charge] = await charges(env.container, payment["id"])
    [op] = await operations(env.container, payment["id"])
    assert charge.idempotency_key == op.id


# -- case 8: an idempotent confirm retry answers the charge, not a 409 ------------------------


async def test_case8_confirm_retry_after_a_lost_response_answers_the_charge(env: Env) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    path = f"/payments/{payment['id']}/confirm"
    fail_storing_once(env.container)
    status, first, _ = await env.keyed(path, {}, "confirm-1", CUSTOMER)
    assert (status, first["status"]) == (200, "captured")
    env.takeover()
    for _ in range(2):
        status, retried, replayed = await env.keyed(path, {}, "confirm-1", CUSTOMER)
        assert (status, retried, replayed) == (200, first, "true")
    assert len(await charges(env.container, payment["id"])) == 1


@SHORT_DEADLINE
async def test_retry_while_the_operation_is_unresolved_is_409(env: Env) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    path = f"/payments/{payment['id']}/confirm"
    env.faulty.plan("charge", Fault.LAND_LATE)
    fail_storing_once(env.container)
    status, first, _ = await env.keyed(path, {}, "c", CUSTOMER)
    assert (status, first["status"]) == (202, "processing")
    env.faulty.always("find_payment", Fault.LOOKUP_ERROR)  # nobody can tell yet
    env.takeover()
    status, body, _ = await env.keyed(path, {}, "c", CUSTOMER)
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")
    env.faulty.always("find_payment", None)
    await env.faulty.land()
    status, body, _ = await env.keyed(path, {}, "c", CUSTOMER)
    assert (status, body["status"]) == (200, "captured")
    assert env.faulty.count("charge") == 1


# -- the window: past it, unknown, reported, never re-sent -------------------------------------


async def test_past_the_idempotency_window_an_operation_is_unknown_and_never_resent(
    env: Env, database_url: str
) -> None:
    payment = await env.api.create(payment_method="pm_card_visa")
    env.faulty.plan("charge", Fault.LOSE_REQUEST)
    await env.api.post(f"/payments/{payment['id']}/confirm", {}, status=202)
    env.clock.advance(env.faulty.idempotency_window.total_seconds() + 1)  # keys forgotten

    for _ in range(2):  # reported by every run, never re-sent
        report = await env.reconcile()
        [item] = report.items
        assert (item.id, item.kind, item.fixable) == (payment["id"], "operation_unknown", False)
    assert env.faulty.count("charge") == 1 and env.faulty.forgotten == 0
    [op] = await operations(env.container, payment["id"])
    assert op.status == "unknown"
    ledger = await env.api.get(f"/admin/payments/{payment['id']}/operations", ADMIN)
    assert [(o["id"], o["status"], o["attempts"]) for o in ledger["data"]] == [
        (op.id, "unknown", 1)
    ]
    assert REGISTRY.get_sample_value("paysvc_operations_unknown") == 1
    # A definitive answer that comes later is still applied.
    await env.faulty.inner.charge(
        ChargeRequest(
            payment_id=payment["id"],
            order_id="1042",
            amount=1999,
            currency="usd",
            capture_method="automatic",
            payment_method="pm_card_visa",
            idempotency_key=op.id,
        )
    )
    report = await env.reconcile()
    assert [(i.kind, i.theirs) for i in report.items] == [("operation_unknown", "succeeded")]
    assert (await env.api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    assert REGISTRY.get_sample_value("paysvc_operations_unknown") == 0


async def test_operations_listing_is_admin_only_and_oldest_first(env: Env) -> None:
    payment = await env.api.paid(capture_method="manual")
    await env.api.post(f"/payments/{payment['id']}/capture", {}, SERVICE)
    await env.api.post(f"/payments/{payment['id']}/refunds", {"amount": 100}, SERVICE, 201)
    listing = await env.api.get(f"/admin/payments/{payment['id']}/operations", ADMIN)
    assert listing["object"] == "list" and listing["has_more"] is False
    assert [(o["kind"], o["status"], o["amount"]) for o in listing["data"]] == [
        ("authorize", "succeeded", 1999),
        ("capture", "succeeded", 1999),
        ("refund", "succeeded", 100),
    ]
    assert all(o["id"].startswith("op_") and o["object"] == "operation" for o in listing["data"])
    for who in (CUSTOMER, SERVICE):
        denied = await env.api.get(f"/admin/payments/{payment['id']}/operations", who, 403)
        assert denied["error"]["type"] == "permission_error"
    await env.api.get("/admin/payments/pay_nope/operations", ADMIN, 404)


async def test_the_payment_row_no_longer_carries_markers(container: Container) -> None:
    assert not {"pending_operation", "pending_since", "confirm_attempts"} & set(
        Payment.__table__.columns.keys()
    )
    async with container.db.transaction(write=False) as session:
        assert list(await session.scalars(select(Operation))) == []


async def test_case2_money_under_another_intent_of_a_payment_is_reported_never_ignored(
    env: Env,
) -> None:
    payment = await env.api.paid()
    other = {
        "id": "pi_someone_else",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 1999,
        "amount_received": 1999,
        "currency": "usd",
        "metadata": {"paysvc_payment_id": payment["id"]},
    }
    payload = event("payment_intent.succeeded", other)
    assert (await deliver(env.client, payload))["status"] == "pending"
    for _ in range(2):  # every run, until a human sorts it out
        report = await env.reconcile()
        [item] = report.items
        assert (item.id, item.kind, item.fixable) == (payload["id"], "order_charged_twice", False)
    assert (await env.api.get(f"/payments/{payment['id']}"))["gateway_reference"] == payment[
        "gateway_reference"
    ]
