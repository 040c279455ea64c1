"""Races around a payment that waits for 3-D Secure, through the real HTTP stack on SQLite and
PostgreSQL: re-confirms, the gateway's webhook, the completer and a cancel all at once end in one
settlement and one charge."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from paysvc.config import Settings
from paysvc.operations.models import Operation
from tests.concurrency.invariants import assert_money_invariants
from tests.conftest import CUSTOMER, Api, make_settings
from tests.stripe_events import WEBHOOK_SECRET, deliver, event, intent
from tests.support import rows
from tests.threeds.helpers import (
    answer_at_gateway,
    charges,
    page_path,
    requires_action,
    status_changes,
)

ROUNDS = 3


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)


async def _reconfirm(client: TestClient[Any, Any], payment_id: str) -> int:
    response = await client.post(f"/payments/{payment_id}/confirm", headers=CUSTOMER)
    await response.read()
    return response.status


@pytest.mark.parametrize("passed", [True, False])
async def test_reconfirms_webhook_and_completer_settle_once(
    api: Api, container: Container, passed: bool
) -> None:
    for round_ in range(ROUNDS):
        payment = await requires_action(api, order_id=f"race-{passed}-{round_}")
        await answer_at_gateway(container, payment, passed)
        stripe_status = "succeeded" if passed else "requires_payment_method"
        error = (
            None
            if passed
            else {"code": "payment_intent_authentication_failure", "message": "failed"}
        )
        webhook = event(
            "payment_intent.succeeded" if passed else "payment_intent.payment_failed",
            intent(
                payment["gateway_reference"],
                stripe_status,
                payment_id=payment["id"],
                error=error,
            ),
        )
        (op,) = await rows(container, Operation, Operation.payment_id == payment["id"])
        results = await asyncio.gather(
            *(_reconfirm(api.client, payment["id"]) for _ in range(4)),
            deliver(api.client, webhook),
            container.reconcile.completer.complete(op.id, force=True),
            container.reconcile.run(dt.timedelta(hours=1), apply=True),
        )
        target = "captured" if passed else "failed"
        assert (await api.get(f"/payments/{payment['id']}"))["status"] == target
        # One settlement: exactly one status change out of requires_action.
        assert await status_changes(container, payment["id"]) == [
            ("pending", "requires_action"),
            ("requires_action", target),
        ]
        # Each re-confirm saw it settled (200/402 by itself; 409 once already settled).
        reconfirms = Counter(results[:4])
        assert set(reconfirms) <= ({200, 409} if passed else {402, 409})
        (charge,) = await charges(container, payment["id"])  # one charge, never a second
        assert charge.status == ("captured" if passed else "failed")
        (op,) = await rows(container, Operation, Operation.payment_id == payment["id"])
        assert (op.status, op.attempts) == ("succeeded" if passed else "failed", 1)
    await assert_money_invariants(container)


async def test_cancel_racing_the_customers_completion_ends_consistent(
    api: Api, container: Container
) -> None:
    """Cancel and Complete at once: either the payment is cancelled and the gateway's intent
    canceled (nothing taken), or it is captured and the cancel got 409 — never a mix."""
    for round_ in range(ROUNDS):
        payment = await requires_action(api, order_id=f"cancel-race-{round_}")
        cancel, _ = await asyncio.gather(
            api.client.post(f"/payments/{payment['id']}/cancel", json={}, headers=CUSTOMER),
            api.client.post(
                page_path(payment), data={"outcome": "complete"}, allow_redirects=False
            ),
        )
        ours = (await api.get(f"/payments/{payment['id']}"))["status"]
        (charge,) = await charges(container, payment["id"])
        if cancel.status == 200:
            assert (ours, charge.status) == ("cancelled", "canceled")
        else:
            assert cancel.status == 409, await cancel.text()
            assert (ours, charge.status) == ("captured", "captured")
    await assert_money_invariants(container)
