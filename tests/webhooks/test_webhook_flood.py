"""`/webhooks/stripe` under a flood of bad signatures: failed verifications are limited per
client IP (valid signatures never are), and audited as one entry per source IP and minute with a
count instead of one write per request."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.web.app import create_app
from paysvc.web.handlers.webhooks import FAILURE_BURST
from tests.stripe_events import event, signed
from tests.support import count

START = dt.datetime(2026, 12, 3, 10, 0, 5, tzinfo=dt.UTC)


class FrozenClock:
    """Time stands still unless the test moves it (no minute boundary crossed by accident)."""

    def __init__(self) -> None:
        self.current = START

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


async def rejections(container: Container) -> list[AuditEntry]:
    async with container.db.transaction(write=False) as session:
        stmt = select(AuditEntry).where(AuditEntry.action == "webhook.verification_failed")
        return list(await session.scalars(stmt.order_by(AuditEntry.occurred_at)))


async def post(
    client: TestClient[Any, Any], body: bytes, headers: dict[str, str], **extra: str
) -> tuple[int, dict[str, Any], Any]:
    response = await client.post("/webhooks/stripe", data=body, headers={**headers, **extra})
    return response.status, await response.json(), response.headers


async def test_a_flood_of_bad_signatures_is_limited_and_audited_once(
    client: TestClient[Any, Any], container: Container, clock: FrozenClock
) -> None:
    stamp = int(clock.now().timestamp())
    body = json.dumps(event("customer.created", {"id": "cus_1", "object": "customer"})).encode()
    bad = signed(body, "whsec_attacker", stamp)
    entries_before = await count(container, AuditEntry)

    statuses = []
    for _ in range(100):
        status, data, headers = await post(client, body, bad)
        statuses.append(status)
        if status == 429:
            assert data["error"]["type"] == "rate_limit_error"
            assert int(headers["Retry-After"]) >= 1
        else:
            assert data["error"]["code"] == "invalid_signature"
    assert statuses == [400] * FAILURE_BURST + [429] * (100 - FAILURE_BURST)
    assert await count(container, AuditEntry) == entries_before  # not one write per bad post

    # A valid signature from the same address is never limited.
    good = json.dumps(event("customer.created", {"id": "cus_2", "object": "customer"})).encode()
    status, data, _ = await post(client, good, signed(good, timestamp=stamp))
    assert (status, data["status"]) == (200, "ignored")

    # Once the minute is over, the next rejection writes the closed minute: one entry, count 100.
    clock.advance(60)
    late = signed(body, "whsec_attacker", int(clock.now().timestamp()))
    status, _, _ = await post(client, body, late)
    assert status == 429
    [entry] = await rejections(container)
    details = json.loads(entry.details)
    assert (entry.origin, entry.outcome, details["count"]) == ("127.0.0.1", "denied", 100)
    assert details["minute"] == "2026-12-03T10:00:00Z"
    assert (
        details["reasons"] == {"no valid signature": 100} or sum(details["reasons"].values()) == 100
    )
    assert "whsec_attacker" not in entry.details


async def test_each_source_and_minute_gets_its_own_entry(
    container: Container, clock: FrozenClock
) -> None:
    log = container.webhooks.rejections
    for origin, times in (("203.0.113.7", 3), ("198.51.100.2", 2)):
        for _ in range(times):
            log.note(origin, "missing header")
    clock.advance(30)  # same minute (10:00:35)
    log.note("203.0.113.7", "timestamp outside the tolerance")
    assert not log.due()
    assert await log.flush() == 0  # the minute is not over
    clock.advance(60)
    log.note("203.0.113.7", "missing header")  # 10:01:35, still open
    assert log.due()
    assert await log.flush() == 2
    by_origin = {e.origin: json.loads(e.details) for e in await rejections(container)}
    assert by_origin["203.0.113.7"]["count"] == 4
    assert by_origin["203.0.113.7"]["reasons"] == {
        "missing header": 3,
        "timestamp outside the tolerance": 1,
    }
    assert by_origin["198.51.100.2"]["count"] == 2
    assert await log.flush(everything=True) == 1  # at shutdown, the open minute too
    assert len(await rejections(container)) == 3


async def test_the_open_minute_is_written_at_shutdown(
    aiohttp_client: Callable[..., Any], settings: Settings, clock: FrozenClock
) -> None:
    services = build_container(settings, clock=clock)
    client = await aiohttp_client(create_app(services, own_container=False))
    body = b'{"id": "evt_x", "type": "x", "data": {"object": {}}}'
    for _ in range(3):
        status, _, _ = await post(client, body, {"Stripe-Signature": "t=1,v1=00"})
        assert status == 400
    assert await rejections(services) == []
    await client.close()  # the app's shutdown flushes what is left
    [entry] = await rejections(services)
    assert json.loads(entry.details)["count"] == 3
    await services.close()
