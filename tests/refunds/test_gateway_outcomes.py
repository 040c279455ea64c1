"""A refund whose gateway answer is lost stays pending (and counts against what is refundable)
until reconciliation settles it; a gateway that certainly did nothing fails the refund."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container
from paysvc.gateways.base import (
    GatewayError,
    GatewayRejected,
    GatewayUnavailable,
    OutcomeUnknown,
)
from tests.conftest import SERVICE, Api
from tests.refunds.helpers import (
    assert_books_agree,
    books,
    completer_at,
    operation_of,
    refund,
    troubled_api,
)


class StepClock:
    def __init__(self) -> None:
        self.value = dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return self.value


Factory = Callable[..., Any]


@pytest.fixture
def troubled(aiohttp_client: Factory, container: Container) -> Callable[..., Any]:
    """An Api whose refunds go through a troubled gateway."""

    async def build(
        failure: type[GatewayError], *, reached: bool, clock: StepClock | None = None
    ) -> Api:
        return await troubled_api(aiohttp_client, container, failure, reached=reached, clock=clock)

    return build


async def test_lost_answer_stays_pending_then_reconciles(
    api: Api, container: Container, troubled: Callable[..., Any]
) -> None:
    payment = await api.paid()
    flaky = await troubled(OutcomeUnknown, reached=True)
    pending = await refund(flaky, payment["id"], amount=500)
    assert pending["status"] == "pending"
    still = await api.get(f"/payments/{payment['id']}")
    assert (still["status"], still["amount_refunded"]) == ("captured", 0)
    # The pending 500 counts against what is refundable.
    error = await refund(api, payment["id"], amount=1500, status=422)
    assert error["error"]["code"] == "amount_exceeds_refundable"
    assert (await refund(api, payment["id"], amount=1499))["status"] == "succeeded"

    op_id = await operation_of(container, pending["id"])
    settled = await container.completer.complete(op_id, force=True)
    assert (settled.status, settled.action) == ("succeeded", "settled by lookup: succeeded")
    again = await container.completer.complete(op_id, force=True)  # once
    assert (again.status, again.action) == ("succeeded", "already settled")
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("refunded", 1999)
    assert (await api.get(f"/refunds/{pending['id']}"))["status"] == "succeeded"
    assert_books_agree(await books(container, payment["id"]))


async def test_call_that_never_arrived_is_resent_when_stale(
    api: Api, container: Container, troubled: Callable[..., Any]
) -> None:
    payment = await api.paid()
    clock = StepClock()
    flaky = await troubled(OutcomeUnknown, reached=False, clock=clock)
    pending = await refund(flaky, payment["id"], amount=700)
    assert pending["status"] == "pending"
    completer = completer_at(container, clock)
    # Its call ended without an answer: due at once; the gateway has nothing: re-sent under
    # the same key (the gateway cannot refund one key twice).
    done = (await completer.run()).completed
    assert [(c.status, c.action) for c in done] == [
        ("succeeded", "re-sent under the same key (attempt 2)")
    ]
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 700)
    assert_books_agree(await books(container, payment["id"]))


async def test_webhook_style_settlement_in_callers_unit_of_work(
    api: Api, container: Container, troubled: Callable[..., Any]
) -> None:
    payment = await api.paid()
    flaky = await troubled(OutcomeUnknown, reached=True)
    pending = await refund(flaky, payment["id"], amount=300)
    truth = await container.gateways.primary.find_refund(pending["id"])
    assert truth is not None and truth.refund_id == pending["id"]
    for _ in range(2):  # the second time: found by reference, nothing changes
        async with container.db.transaction() as session:
            locked = await container.payments.load(session, SYSTEM, payment["id"], for_update=True)
            settled = await container.refunds.apply_gateway_refund(session, locked, truth)
            assert settled is not None and settled.id == pending["id"]
            assert settled.status == "succeeded"
            assert settled.gateway_reference == truth.reference
    after = await api.get(f"/payments/{payment['id']}")
    assert after["amount_refunded"] == 300
    assert_books_agree(await books(container, payment["id"]))


@pytest.mark.parametrize(
    ("failure", "status", "code", "reason"),
    [
        (GatewayUnavailable, 503, "gateway_unavailable", "gateway_unavailable"),
        (GatewayRejected, 422, "gateway_rejected", "gateway_rejected"),
    ],
)
async def test_gateway_that_did_nothing_fails_the_refund(
    api: Api,
    container: Container,
    troubled: Callable[..., Any],
    failure: type[GatewayError],
    status: int,
    code: str,
    reason: str,
) -> None:
    payment = await api.paid()
    down = await troubled(failure, reached=False)
    error = await down.post(f"/payments/{payment['id']}/refunds", {"amount": 400}, SERVICE, status)
    assert error["error"]["code"] == code
    listed = await api.get(f"/payments/{payment['id']}/refunds")
    assert [(r["status"], r["failure_reason"]) for r in listed["data"]] == [("failed", reason)]
    # Nothing happened, so everything is refundable again.
    assert (await refund(api, payment["id"]))["amount"] == 1999
    assert_books_agree(await books(container, payment["id"]))
