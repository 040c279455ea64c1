"""POST /webhooks/stripe through the real HTTP stack: verification, inbox, effects."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container, build_container
from paysvc.gateways.base import ChargeRequest, GatewayPayment
from paysvc.web.app import create_app
from tests.conftest import SERVICE, Api, make_settings
from tests.stripe_events import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    deliver,
    dispute,
    event,
    inbox,
    intent,
    ledger_reference,
    signed,
    status_changes,
)


async def _processing(api: Api, container: Container, **body: Any) -> tuple[dict[str, Any], str]:
    """A payment whose gateway answer was lost, and the gateway's id for it."""
    payment = await api.paid("pm_card_timeout", **body)
    return payment, await ledger_reference(container, payment["id"])


async def test_bad_signatures_are_400_and_change_nothing(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment, reference = await _processing(api, container)
    body = json.dumps(
        event("payment_intent.succeeded", intent(reference, "succeeded", payment_id=payment["id"]))
    ).encode()
    stale = int(time.time()) - 301
    attempts = {
        "missing header": {"Content-Type": "application/json"},
        "wrong secret": signed(body, "whsec_not_ours"),
        "tampered body": signed(body.replace(b"1999", b"1998")),
        "stale timestamp": signed(body, WEBHOOK_SECRET, stale),
        "future timestamp": signed(body, WEBHOOK_SECRET, int(time.time()) + 3600),
    }
    for case, headers in attempts.items():
        response = await client.post("/webhooks/stripe", data=body, headers=headers)
        error = (await response.json())["error"]
        assert response.status == 400, case
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_signature"
        assert WEBHOOK_SECRET not in json.dumps(error)
    assert await api.get(f"/payments/{payment['id']}") == payment
    assert await inbox(container) == {}
    await container.webhooks.rejections.flush(everything=True)  # else once the minute is over
    async with container.db.transaction(write=False) as session:
        audited = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "webhook.verification_failed")
            )
        )
    assert len(audited) <= 2  # one per source and minute (two if a minute ended meanwhile)
    assert {(a.actor_id, a.actor_role, a.outcome, a.origin) for a in audited} == {
        ("stripe", "service", "denied", "127.0.0.1")
    }
    assert sum(json.loads(a.details)["count"] for a in audited) == len(attempts)
    assert all(WEBHOOK_SECRET not in a.details for a in audited)


async def test_no_secret_configured_rejects_everything(
    aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    services = build_container(make_settings(database_url))
    client = await aiohttp_client(create_app(services))
    body = json.dumps(event("customer.created", {"id": "cus_1", "object": "customer"})).encode()
    response = await client.post("/webhooks/stripe", data=body, headers=signed(body))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_signature"


async def test_retired_secret_still_verifies_and_unknown_types_are_ignored(
    client: TestClient[Any, Any], container: Container
) -> None:
    payload = event("customer.created", {"id": "cus_1", "object": "customer"})
    body = json.dumps(payload).encode()
    response = await client.post(
        "/webhooks/stripe", data=body, headers=signed(body, OLD_WEBHOOK_SECRET)
    )
    assert response.status == 200
    assert await response.json() == {"received": True, "status": "ignored"}
    assert await inbox(container) == {payload["id"]: "ignored"}


async def test_signed_body_that_is_not_an_event_is_400(client: TestClient[Any, Any]) -> None:
    for body in (b"not json", b"[]", b'{"id": "evt_1", "type": "x"}'):
        response = await client.post("/webhooks/stripe", data=body, headers=signed(body))
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_body_over_64_kib_is_413(client: TestClient[Any, Any]) -> None:
    body = b'{"pad": "' + b"x" * 70_000 + b'"}'
    response = await client.post("/webhooks/stripe", data=body, headers=signed(body))
    assert response.status == 413


async def test_succeeded_settles_a_processing_payment(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment, reference = await _processing(api, container)
    payload = event(
        "payment_intent.succeeded", intent(reference, "succeeded", payment_id=payment["id"])
    )
    assert (await deliver(client, payload))["status"] == "applied"
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured"
    assert settled["amount_captured"] == 1999
    assert settled["gateway_reference"] == reference
    assert (await status_changes(container, payment["id"]))[-1] == (
        "processing",
        "captured",
        "webhook: payment_intent.succeeded",
    )


async def test_same_event_five_times_concurrently_is_applied_once(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment, reference = await _processing(api, container)
    payload = event(
        "payment_intent.succeeded", intent(reference, "succeeded", payment_id=payment["id"])
    )
    results = await asyncio.gather(*(deliver(client, payload) for _ in range(5)))
    assert sorted(r["status"] for r in results) == ["applied"] + ["duplicate"] * 4
    moves = await status_changes(container, payment["id"])
    assert [m[:2] for m in moves].count(("processing", "captured")) == 1
    assert await inbox(container) == {payload["id"]: "applied"}
    again = await deliver(client, payload)
    assert again["status"] == "duplicate"


async def test_events_never_move_a_payment_backwards(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await api.paid()
    reference = payment["gateway_reference"]
    declined = {"code": "card_declined", "decline_code": "generic_decline", "message": "no"}
    for payload in (
        event(
            "payment_intent.payment_failed",
            intent(reference, "requires_payment_method", error=declined),
        ),
        event("payment_intent.canceled", intent(reference, "canceled")),
        event(
            "payment_intent.amount_capturable_updated",
            intent(reference, "requires_capture", capturable=1999),
        ),
    ):
        assert (await deliver(client, payload))["status"] == "applied"
    assert await api.get(f"/payments/{payment['id']}") == payment

    await api.post(f"/payments/{payment['id']}/refunds", {}, SERVICE, status=201)
    refunded = await api.get(f"/payments/{payment['id']}")
    late = event(
        "payment_intent.succeeded", intent(reference, "succeeded", payment_id=payment["id"])
    )
    assert (await deliver(client, late))["status"] == "applied"
    assert await api.get(f"/payments/{payment['id']}") == refunded
    assert refunded["status"] == "refunded" and refunded["amount_refunded"] == 1999


async def test_failed_and_cancelled_outcomes_apply_forward(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    failing, failing_ref = await _processing(api, container, order_id="a")
    declined = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Nope."}
    await deliver(
        client,
        event(
            "payment_intent.payment_failed",
            intent(
                failing_ref, "requires_payment_method", payment_id=failing["id"], error=declined
            ),
        ),
    )
    failed = await api.get(f"/payments/{failing['id']}")
    assert failed["status"] == "failed"
    assert failed["failure"] == {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Nope.",
    }
    authorized = await api.paid(order_id="b", capture_method="manual")
    await deliver(
        client,
        event("payment_intent.canceled", intent(authorized["gateway_reference"], "canceled")),
    )
    assert (await api.get(f"/payments/{authorized['id']}"))["status"] == "cancelled"


async def test_intent_of_another_attempt_is_ignored(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment = await api.paid(capture_method="manual")
    stray = event(
        "payment_intent.canceled", intent("pi_other", "canceled", payment_id=payment["id"])
    )
    assert (await deliver(client, stray))["status"] == "ignored"
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "authorized"


async def test_event_arriving_during_confirm_is_applied_when_confirm_settles(
    api: Api, client: TestClient[Any, Any], container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe may send webhooks before our confirm call returns: they wait, then apply."""
    sandbox = container.gateways.for_payment("sandbox")
    charge = sandbox.charge
    early: list[dict[str, Any]] = []

    async def charge_then_webhooks(request: ChargeRequest) -> GatewayPayment:
        result = await charge(request)
        for payload in (
            event("payment_intent.succeeded", intent(result.reference, "succeeded")),
            event("charge.dispute.created", dispute("dp_early", result.reference)),
        ):
            early.append(await deliver(client, payload))
        return result

    monkeypatch.setattr(sandbox, "charge", charge_then_webhooks)
    payment = await api.paid()
    assert [e["status"] for e in early] == ["pending", "pending"]
    assert set((await inbox(container)).values()) == {"applied"}
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured" and settled["disputed"] is True
    moves = await status_changes(container, payment["id"])
    assert [m[:2] for m in moves] == [("pending", "captured")]


async def test_inbox_is_read_after_a_confirm_only_when_an_event_waits(
    api: Api, client: TestClient[Any, Any], container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The confirm's settling transaction asks whether events wait for the payment; the
    inbox is retried after the commit only then (not after every confirm)."""
    retried: list[str] = []
    [follow_up] = [
        f
        for f in container.payments.confirm_followups
        if f.run == container.webhooks.retry_for_payment
    ]

    async def counted(payment_id: str) -> int:
        retried.append(payment_id)
        return await container.webhooks.retry_for_payment(payment_id)

    monkeypatch.setattr(
        container.payments,
        "confirm_followups",
        [
            dataclasses.replace(f, run=counted) if f is follow_up else f
            for f in container.payments.confirm_followups
        ],
    )
    quiet = await api.paid(order_id="quiet")
    assert quiet["status"] == "captured" and retried == []

    sandbox = container.gateways.for_payment("sandbox")
    charge = sandbox.charge

    async def charge_then_dispute(request: ChargeRequest) -> GatewayPayment:
        result = await charge(request)
        early = await deliver(
            client, event("charge.dispute.created", dispute("dp_w", result.reference))
        )
        assert early["status"] == "pending"
        return result

    monkeypatch.setattr(sandbox, "charge", charge_then_dispute)
    disputed = await api.paid(order_id="disputed")
    assert retried == [disputed["id"]]
    assert set((await inbox(container)).values()) == {"applied"}
    assert (await api.get(f"/payments/{disputed['id']}"))["disputed"] is True


async def test_event_with_our_id_settles_an_in_flight_confirm(
    api: Api, client: TestClient[Any, Any], container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata.paysvc_payment_id finds the payment before it has a reference."""
    sandbox = container.gateways.for_payment("sandbox")
    charge = sandbox.charge

    async def charge_then_webhook(request: ChargeRequest) -> GatewayPayment:
        result = await charge(request)
        payload = event(
            "payment_intent.succeeded",
            intent(result.reference, "succeeded", payment_id=request.payment_id),
        )
        assert (await deliver(client, payload))["status"] == "applied"
        return result

    monkeypatch.setattr(sandbox, "charge", charge_then_webhook)
    payment = await api.paid()
    assert payment["status"] == "captured"
    moves = await status_changes(container, payment["id"])
    assert [m[:2] for m in moves] == [("pending", "captured")]
    assert moves[-1][2] == "webhook: payment_intent.succeeded"
    [op] = await container.payments.operations(SYSTEM, payment["id"])
    assert (op.kind, op.status, op.gateway_reference) == (
        "charge",
        "succeeded",
        payment["gateway_reference"],
    )


async def test_event_for_unknown_payment_waits_until_reconciliation_finds_it(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    payment, reference = await _processing(api, container)
    payload = event("charge.dispute.created", dispute("dp_waiting", reference))
    assert (await deliver(client, payload))["status"] == "pending"
    assert (await api.get(f"/payments/{payment['id']}"))["disputed"] is False
    report = await container.reconcile.run_once()
    assert report.webhooks_applied == 1
    settled = await api.get(f"/payments/{payment['id']}")
    assert settled["status"] == "captured" and settled["disputed"] is True
    assert await inbox(container) == {payload["id"]: "applied"}


async def test_cancelled_intent_fails_a_processing_payment(
    api: Api, client: TestClient[Any, Any], container: Container
) -> None:
    """processing may not become cancelled; nothing was taken, so it fails (forward)."""
    payment, reference = await _processing(api, container)
    await deliver(
        client,
        event("payment_intent.canceled", intent(reference, "canceled", payment_id=payment["id"])),
    )
    failed = await api.get(f"/payments/{payment['id']}")
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "payment_intent_canceled"
    # The order is free again for a new payment.
    again = await api.paid(order_id=payment["order_id"])
    assert again["status"] == "captured"
