"""Stripe-shaped webhook events for tests, signed and delivered through the real HTTP stack."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from paysvc.bootstrap import Container
from paysvc.config import Settings
from paysvc.gateways.base import GatewayRefund
from paysvc.payments.models import PaymentEvent
from paysvc.webhooks.models import WebhookEvent
from paysvc.webhooks.signature import sign_stripe_payload
from tests.conftest import make_settings

WEBHOOK_SECRET = "whsec_test_current_" + "a" * 24
OLD_WEBHOOK_SECRET = "whsec_test_retired_" + "b" * 24


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings with two webhook secrets configured (rotation)."""
    return make_settings(
        database_url, STRIPE_WEBHOOK_SECRET=f"{OLD_WEBHOOK_SECRET}, {WEBHOOK_SECRET}"
    )


def event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def intent(
    reference: str,
    status: str,
    *,
    amount: int = 1999,
    received: int | None = None,
    capturable: int = 0,
    payment_id: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": reference,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": capturable,
        "amount_received": amount if received is None and status == "succeeded" else received or 0,
        "currency": "usd",
        "status": status,
        "metadata": {"paysvc_payment_id": payment_id} if payment_id else {},
        "last_payment_error": error,
        "latest_charge": "ch_" + reference[-12:],
    }


def dispute(
    reference: str,
    payment_reference: str,
    status: str = "needs_response",
    *,
    amount: int = 1999,
    reason: str = "fraudulent",
    due_by: int | None = 1_900_000_000,
) -> dict[str, Any]:
    return {
        "id": reference,
        "object": "dispute",
        "amount": amount,
        "currency": "usd",
        "charge": "ch_" + payment_reference[-12:],
        "payment_intent": payment_reference,
        "reason": reason,
        "status": status,
        "evidence_details": {"due_by": due_by},
    }


def refund_object(
    truth: GatewayRefund,
    status: str | None = None,
    *,
    with_our_id: bool = True,
    reason: str | None = None,
) -> dict[str, Any]:
    """A Stripe Refund as a webhook carries it, for a refund the gateway holds (`truth`);
    `status` overrides the gateway's (late or forged news)."""
    return {
        "id": truth.reference,
        "object": "refund",
        "amount": truth.amount,
        "currency": "usd",
        "payment_intent": truth.payment_reference,
        "status": status or str(truth.status),
        "reason": reason,
        "failure_reason": truth.failure_reason,
        "metadata": {"paysvc_refund_id": truth.refund_id}
        if with_our_id and truth.refund_id
        else {},
    }


def charge_refunded(refunds: list[dict[str, Any]]) -> dict[str, Any]:
    """A `charge.refunded` event's charge, listing its refunds (newest first, as Stripe)."""
    reference = refunds[0]["payment_intent"]
    return {
        "id": "ch_" + reference[-12:],
        "object": "charge",
        "payment_intent": reference,
        "amount_refunded": sum(r["amount"] for r in refunds if r["status"] == "succeeded"),
        "refunded": False,
        "refunds": {"object": "list", "data": refunds, "has_more": False},
    }


def signed(
    body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Stripe-Signature": sign_stripe_payload(body, secret, stamp),
        "Content-Type": "application/json",
    }


async def deliver(
    client: TestClient[Any, Any], payload: dict[str, Any], *, status: int = 200
) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    response: ClientResponse = await client.post(
        "/webhooks/stripe", data=body, headers=signed(body)
    )
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def inbox(container: Container) -> dict[str, str]:
    """Event id -> inbox status."""
    async with container.db.transaction(write=False) as session:
        rows = (await session.execute(select(WebhookEvent.id, WebhookEvent.status))).all()
    return {row.id: row.status for row in rows}


async def status_changes(container: Container, payment_id: str) -> list[tuple[Any, Any, Any]]:
    async with container.db.transaction(write=False) as session:
        events = await session.scalars(
            select(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id, PaymentEvent.type == "status_changed")
            .order_by(PaymentEvent.created_at, PaymentEvent.id)
        )
        return [(e.from_status, e.to_status, e.reason) for e in events]


async def count_events(container: Container, payment_id: str, kind: str) -> int:
    async with container.db.transaction(write=False) as session:
        value = await session.scalar(
            select(func.count())
            .select_from(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id, PaymentEvent.type == kind)
        )
    return int(value or 0)


async def ledger_reference(container: Container, payment_id: str) -> str:
    """The gateway's own id for a payment whose answer we lost (pm_card_timeout)."""
    truth = await container.gateways.primary.find_payment(payment_id)
    assert truth is not None
    return truth.reference


async def gateway_refund(container: Container, refund_id: str) -> GatewayRefund:
    """What the sandbox holds for one of our refunds (e.g. one whose answer was lost)."""
    truth = await container.gateways.primary.find_refund(refund_id)
    assert truth is not None
    return truth
