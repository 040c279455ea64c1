"""A request that crashed while holding its key: once the key is stale, the retry re-attaches to
the operation the first attempt recorded, which the completer finishes (lookup, or re-send under
the same key): charged exactly once, the handler never run twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from paysvc.auth.principal import Actor, Role
from paysvc.bootstrap import Container
from paysvc.gateways.base import ChargeRequest, GatewayPayment
from paysvc.gateways.failover import FailoverGateway
from paysvc.gateways.registry import Gateways
from paysvc.gateways.sandbox import SandboxCharge, SandboxGateway
from paysvc.idempotency.models import IdempotencyKey, KeyState
from paysvc.idempotency.service import CURRENT_CLAIM, Claim, KeyedRequest, fingerprint
from paysvc.operations.models import Operation
from paysvc.operations.service import Ledger
from paysvc.payments.service import PaymentService
from tests.conftest import CUSTOMER, Api
from tests.support import ManualClock, count, rows

BODY = {"payment_method": "pm_card_visa"}


class Crash(BaseException):
    """The process dying mid-request: nothing after it runs, not even `except Exception`."""


class CrashingSandbox(SandboxGateway):
    def __init__(self, inner: SandboxGateway, *, after_charge: bool) -> None:
        super().__init__(inner.database, inner.clock)
        self.after_charge = after_charge

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        if self.after_charge:
            await super().charge(request)  # the charge happens; the answer never comes back
        raise Crash


async def crash_first_attempt(container: Container, payment_id: str, after_charge: bool) -> None:
    """What the first `POST /confirm` with key `retry-me` left behind when the process died:
    its in-flight key, naming the pending charge operation its phase 1 recorded."""
    path = f"/payments/{payment_id}/confirm"
    claim = await container.idempotency.begin(
        KeyedRequest(
            principal="customer:17",
            key="retry-me",
            method="POST",
            path=path,
            fingerprint=fingerprint("POST", path, json.dumps(BODY).encode()),
        )
    )
    assert isinstance(claim, Claim)
    sandbox = getattr(container.gateways.for_payment("sandbox"), "inner", None)
    assert isinstance(sandbox, SandboxGateway)
    crashing = CrashingSandbox(sandbox, after_charge=after_charge)
    gateways = Gateways(FailoverGateway([crashing], container.clock))
    doomed = PaymentService(
        container.db,
        gateways,
        container.clock,
        container.audit,
        Ledger(gateways, container.clock, container.settings.timing),
        container.outbox,
    )
    CURRENT_CLAIM.set(claim)  # as the middleware does for the request
    with pytest.raises(Crash):
        await doomed.confirm(Actor("17", Role.CUSTOMER), payment_id, "pm_card_visa")
    CURRENT_CLAIM.set(None)


async def retry(client: TestClient[Any, Any], payment_id: str) -> tuple[int, Any, Any]:
    response = await client.post(
        f"/payments/{payment_id}/confirm",
        json=BODY,
        headers={**CUSTOMER, "Idempotency-Key": "retry-me"},
    )
    return response.status, await response.json(), response.headers


@pytest.mark.parametrize("after_charge", [True, False], ids=["charged", "not-charged"])
async def test_stale_key_is_taken_over_and_charges_once(
    api: Api, container: Container, clock: ManualClock, after_charge: bool
) -> None:
    payment = await api.create()
    await crash_first_attempt(container, payment["id"], after_charge)
    [op] = await rows(container, Operation, Operation.payment_id == payment["id"])
    assert (op.kind, op.status) == ("charge", "pending")
    [key] = await rows(container, IdempotencyKey)
    assert key.resource_id == op.id
    assert await count(container, SandboxCharge) == (1 if after_charge else 0)

    # While the first attempt may still be running, the key is in use.
    clock.advance(30)
    status, body, _ = await retry(api.client, payment["id"])
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")

    # Past the take-over the retry re-attaches to the same operation: the same gateway key.
    clock.advance(31)
    status, body, headers = await retry(api.client, payment["id"])
    assert (status, body["status"]) == (200, "captured")
    assert headers["Idempotent-Replayed"] == "true"
    assert await count(container, SandboxCharge) == 1
    [charge] = await rows(container, SandboxCharge)
    assert charge.idempotency_key == op.id
    assert body["gateway_reference"] == charge.reference
    [record] = await rows(container, IdempotencyKey)
    assert (record.state, record.response_status) == (KeyState.DONE, 200)

    status, replayed, headers = await retry(api.client, payment["id"])
    assert (status, replayed) == (200, body)
    assert headers["Idempotent-Replayed"] == "true"
    assert await count(container, SandboxCharge) == 1


async def test_stale_threshold_is_configurable(
    api: Api, container: Container, clock: ManualClock
) -> None:
    container.idempotency.stale_after = container.idempotency.stale_after * 10
    payment = await api.create()
    await crash_first_attempt(container, payment["id"], after_charge=True)
    clock.advance(61)
    status, body, _ = await retry(api.client, payment["id"])
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")
    assert await count(container, SandboxCharge) == 1
