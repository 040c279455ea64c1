"""Shared helpers for the 3-D Secure tests: a payment waiting for authentication, the sandbox's
challenge page, and what the sandbox ledger holds."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient

from paysvc.bootstrap import Container
from paysvc.gateways.sandbox import SandboxAuthentication, SandboxCharge, SandboxGateway
from paysvc.payments.models import PaymentEvent
from tests.conftest import CUSTOMER, Api
from tests.support import rows

THREE_DS = "pm_card_threeDSecure2Required"
RETURN_URL = "http://localhost:5173/checkout/done?cart=7"


async def requires_action(
    api: Api,
    *,
    return_url: str | None = RETURN_URL,
    headers: dict[str, str] | None = None,
    **intent: Any,
) -> dict[str, Any]:
    """A payment confirmed with the 3-D Secure card: 200 `requires_action`."""
    payment = await api.create(headers, **intent)
    body: dict[str, Any] = {"payment_method": THREE_DS}
    if return_url is not None:
        body["return_url"] = return_url
    confirmed = await api.post(f"/payments/{payment['id']}/confirm", body, headers)
    assert confirmed["status"] == "requires_action", confirmed
    return confirmed


def page_path(payment: dict[str, Any]) -> str:
    """The path of the sandbox page `next_action` links to."""
    url = payment["next_action"]["redirect_to_url"]["url"]
    return urlsplit(url).path


async def answer(
    client: TestClient[Any, Any], payment: dict[str, Any], outcome: str, *, status: int = 303
) -> str:
    """Press a button on the challenge page (as the browser's form POST); the Location."""
    response = await client.post(
        page_path(payment), data={"outcome": outcome}, allow_redirects=False
    )
    assert response.status == status, await response.text()
    return response.headers.get("Location", "")


async def reconfirm(api: Api, payment_id: str, *, status: int = 200) -> dict[str, Any]:
    """The owner's confirm with an empty body (asks the gateway; never charges)."""
    response = await api.client.post(f"/payments/{payment_id}/confirm", headers=CUSTOMER)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def charges(container: Container, payment_id: str) -> list[SandboxCharge]:
    return await rows(container, SandboxCharge, SandboxCharge.payment_id == payment_id)


async def challenges(container: Container, reference: str) -> list[SandboxAuthentication]:
    return await rows(
        container, SandboxAuthentication, SandboxAuthentication.charge_reference == reference
    )


async def status_changes(container: Container, payment_id: str) -> list[tuple[str, str]]:
    """The payment's history of status changes, oldest first, as (from, to)."""
    events = await rows(
        container,
        PaymentEvent,
        PaymentEvent.payment_id == payment_id,
        PaymentEvent.type == "status_changed",
    )
    events.sort(key=lambda event: event.created_at)
    return [(str(event.from_status), str(event.to_status)) for event in events]


def sandbox(container: Container) -> SandboxGateway:
    assert container.gateways.sandbox is not None
    return container.gateways.sandbox


async def answer_at_gateway(container: Container, payment: dict[str, Any], passed: bool) -> None:
    """The customer answers the challenge at the gateway; nothing tells paysvc (as if the
    page's own settlement, or Stripe's webhook, were lost)."""
    token = page_path(payment).rsplit("/", 1)[1]
    assert await sandbox(container).authenticate(token, passed) is not None
