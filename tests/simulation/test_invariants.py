"""The invariant checks of the simulation and of scripts/chaos can fail: each kind of damage
they exist for, made by hand at the gateway or in the answers, is reported."""

from __future__ import annotations

from paysvc.bootstrap import Container
from paysvc.gateways.base import ChargeRequest
from tests.conftest import SERVICE, Api
from tests.refunds.helpers import sandbox
from tests.simulation.invariants import Journal, keyed_violations, ledger_violations


async def test_a_clean_history_has_no_violations(api: Api, container: Container) -> None:
    payment = await api.paid()
    await api.post(f"/payments/{payment['id']}/refunds", {"amount": 500}, SERVICE, status=201)
    assert await ledger_violations(container) == []


async def test_a_second_charge_for_one_order_is_reported(api: Api, container: Container) -> None:
    payment = await api.paid()
    await sandbox(container).charge(
        ChargeRequest(
            payment_id=payment["id"],
            order_id=payment["order_id"],
            amount=payment["amount"],
            currency="usd",
            capture_method="automatic",
            payment_method="pm_card_visa",
            idempotency_key="another-key",
        )
    )
    found = await ledger_violations(container)
    assert any(v.startswith("order_charged_twice") for v in found), found
    assert any(v.startswith("payment_charged_twice") for v in found), found


async def test_a_refund_we_do_not_know_is_reported(api: Api, container: Container) -> None:
    payment = await api.paid()
    await sandbox(container).force_refund(payment["gateway_reference"], 300, "usd")
    found = await ledger_violations(container)
    assert any(v.startswith("unknown_gateway_refund") for v in found), found
    assert any(v.startswith("gateway_mismatch") for v in found), found  # 300 refunded there


async def test_an_unsettled_payment_is_reported(api: Api, container: Container) -> None:
    payment = await api.paid("pm_card_timeout")
    found = await ledger_violations(container)
    assert any(v.startswith("pending_left") and payment["id"] in v for v in found), found


async def test_two_outcomes_for_one_key_and_a_key_that_refunded_twice(
    api: Api, container: Container
) -> None:
    payment = await api.paid()
    path = f"/payments/{payment['id']}/refunds"
    tagged = {"amount": 100, "metadata": {"request_key": "K"}}
    first = await api.post(path, tagged, SERVICE, status=201)
    second = await api.post(path, tagged, SERVICE, status=201)  # no Idempotency-Key: runs twice
    journal = Journal()
    journal.sent.update({"K", "never-answered"})
    journal.answered("K", 201, first)
    journal.answered("K", 201, second)
    assert sorted(v.split(":")[0] for v in journal.violations()) == [
        "key_two_outcomes",
        "key_unanswered",
    ]
    found = await keyed_violations(container, journal)
    assert any(v.startswith("key_executed_twice: K") for v in found), found
    lost = Journal()
    lost.answered("K", 409, {"error": {"code": "state_conflict"}})
    assert any(v.startswith("key_outcome_lost: K") for v in await keyed_violations(container, lost))
