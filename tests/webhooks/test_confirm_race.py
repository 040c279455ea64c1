"""A Stripe webhook racing the confirm that settles its payment, through HTTP, many rounds.

The event names the intent only (no paysvc id), so until the confirm's settling transaction
commits the payment's gateway reference it cannot be matched: it waits in the inbox, and the
confirm follow-up (`ConfirmFollowUp`, asked in that transaction) applies it. Whatever the
interleaving, the event's effect must be there once the confirm answered, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from paysvc.gateways.base import ChargeRequest, GatewayPayment
from tests.conftest import Api
from tests.stripe_events import deliver, event, inbox, intent, status_changes

ROUNDS = 30


async def test_a_webhook_racing_the_confirm_is_applied_once_every_time(
    api: Api, client: TestClient[Any, Any], container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manual-capture payment is confirmed (authorized) while `payment_intent.succeeded`
    (captured at the gateway) is delivered: sent as soon as the gateway answered the charge,
    after 0 to 5 ms, so across rounds it lands before, during and after the settling commit."""
    sandbox = container.gateways.for_payment("sandbox")
    charge = sandbox.charge
    charged: asyncio.Queue[str] = asyncio.Queue()

    async def charge_and_tell(request: ChargeRequest) -> GatewayPayment:
        result = await charge(request)
        charged.put_nowait(result.reference)
        return result

    monkeypatch.setattr(sandbox, "charge", charge_and_tell)
    answers: Counter[str] = Counter()  # how the inbox took the event: applied or pending

    async def webhook(delay: float) -> None:
        reference = await charged.get()
        await asyncio.sleep(delay)
        answer = await deliver(
            client, event("payment_intent.succeeded", intent(reference, "succeeded"))
        )
        answers[answer["status"]] += 1

    for round_ in range(ROUNDS):
        payment = await api.create(order_id=f"race-{round_}", capture_method="manual")
        confirmed, _ = await asyncio.gather(
            api.post(f"/payments/{payment['id']}/confirm", {"payment_method": "pm_card_visa"}),
            webhook(0.001 * (round_ % 6)),
        )
        assert confirmed["status"] in ("authorized", "captured")
        settled = await api.get(f"/payments/{payment['id']}")
        assert (settled["status"], settled["amount_captured"]) == ("captured", 1999), (
            round_,
            answers,
        )
        moves = await status_changes(container, payment["id"])
        assert [m[:2] for m in moves] == [("pending", "authorized"), ("authorized", "captured")]
        assert moves[1][2] == "webhook: payment_intent.succeeded"
    assert set((await inbox(container)).values()) == {"applied"}
    assert sum(answers.values()) == ROUNDS
