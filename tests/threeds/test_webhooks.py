"""Stripe's webhooks settle a payment waiting for 3-D Secure: every way out of
`requires_action` that a PaymentIntent event can bring, signed and delivered through the real
HTTP stack (the payment itself is the sandbox's; the events are Stripe-shaped)."""

from __future__ import annotations

from typing import Any

import pytest

from paysvc.bootstrap import Container
from paysvc.config import Settings
from paysvc.operations.models import Operation
from tests.conftest import Api, make_settings
from tests.stripe_events import WEBHOOK_SECRET, deliver, event, intent
from tests.support import rows
from tests.threeds.helpers import requires_action, status_changes


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)


async def op_statuses(container: Container, payment_id: str) -> list[str]:
    ops = await rows(container, Operation, Operation.payment_id == payment_id)
    return [op.status for op in sorted(ops, key=lambda op: (op.created_at, op.id))]


def pi_event(payment: dict[str, Any], kind: str, status: str, **fields: Any) -> dict[str, Any]:
    return event(
        f"payment_intent.{kind}",
        intent(payment["gateway_reference"], status, payment_id=payment["id"], **fields),
    )


async def test_succeeded(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    await deliver(api.client, pi_event(payment, "succeeded", "succeeded"))
    settled = await api.get(f"/payments/{payment['id']}")
    assert (settled["status"], settled["amount_captured"]) == ("captured", 1999)
    assert settled["next_action"] is None
    assert await op_statuses(container, payment["id"]) == ["succeeded"]


async def test_amount_capturable_updated(api: Api, container: Container) -> None:
    payment = await requires_action(api, capture_method="manual")
    await deliver(
        api.client,
        pi_event(payment, "amount_capturable_updated", "requires_capture", capturable=1999),
    )
    settled = await api.get(f"/payments/{payment['id']}")
    assert (settled["status"], settled["amount_capturable"]) == ("authorized", 1999)
    assert await op_statuses(container, payment["id"]) == ["succeeded"]


async def test_payment_failed_with_authentication_failure(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    error = {
        "code": "payment_intent_authentication_failure",
        "message": "The provided PaymentMethod has failed authentication.",
    }
    await deliver(
        api.client, pi_event(payment, "payment_failed", "requires_payment_method", error=error)
    )
    failed = await api.get(f"/payments/{payment['id']}")
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "payment_intent_authentication_failure"
    assert await op_statuses(container, payment["id"]) == ["failed"]


async def test_canceled_at_the_gateway(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    await deliver(api.client, pi_event(payment, "canceled", "canceled"))
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "cancelled"
    assert await op_statuses(container, payment["id"]) == ["failed"]  # nothing was taken


async def test_processing_then_succeeded(api: Api, container: Container) -> None:
    """Authenticated, then the gateway takes its time: processing (the charge operation is an
    ordinary pending one again), then captured."""
    payment = await requires_action(api)
    await deliver(api.client, pi_event(payment, "processing", "processing"))
    processing = await api.get(f"/payments/{payment['id']}")
    assert processing["status"] == "processing" and processing["next_action"] is None
    assert await op_statuses(container, payment["id"]) == ["pending"]
    await deliver(api.client, pi_event(payment, "succeeded", "succeeded"))
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    assert await op_statuses(container, payment["id"]) == ["succeeded"]
    assert await status_changes(container, payment["id"]) == [
        ("pending", "requires_action"),
        ("requires_action", "processing"),
        ("processing", "captured"),
    ]


async def test_late_news_never_moves_it_back(api: Api, container: Container) -> None:
    payment = await requires_action(api)
    await deliver(api.client, pi_event(payment, "succeeded", "succeeded"))
    for late in (
        pi_event(payment, "requires_action", "requires_action"),
        pi_event(payment, "processing", "processing"),
    ):
        await deliver(api.client, late)
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "captured"
    assert await status_changes(container, payment["id"]) == [
        ("pending", "requires_action"),
        ("requires_action", "captured"),
    ]
