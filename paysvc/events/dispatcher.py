"""The dispatcher: delivers the outbox, at least once, in order per payment and destination.

Every instance runs one. A pass claims due deliveries (a lease: `claim_token` and
`claimed_until`, taken with FOR UPDATE SKIP LOCKED on PostgreSQL and under the write lock on
SQLite, so two instances never send the same attempt at once), commits, sends them holding no
database lock (each is a different payment or destination: only the earliest pending delivery
of a payment and destination is ever due), then records every attempt and claims the next batch
(the deliveries that became due meanwhile, e.g. the next event of a payment just delivered) in
one unit of work. A pass therefore costs one write transaction per batch plus one: while busy,
claims are at most `PACE` apart, so the commits that woke the dispatcher meanwhile go out in one
batch; a claim that finds nothing also reads when the next delivery is due. The backlog gauges
are recounted at most every `METRICS_EVERY` seconds (and once the dispatcher goes quiet).
A 2xx is delivered; anything else is retried with exponential backoff and jitter until
`give_up_at` (3 days), then the delivery is `dead` (logged, counted in /metrics). The
`order-status` destination records a 4xx other than 408/429 as `failed`, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.background import Wakeable
from paysvc.clock import Clock, rfc3339
from paysvc.db.engine import Database
from paysvc.events import metrics
from paysvc.events.models import Event, EventDelivery
from paysvc.events.repository import EventRepository
from paysvc.events.signing import Signer

log = logging.getLogger(__name__)

SEND_TIMEOUT = 10.0
CLAIM_LEASE = dt.timedelta(seconds=60)  # > SEND_TIMEOUT: a crashed sender's claim expires
BACKOFF = (5, 30, 120, 600, 1800, 3600, 7200)  # seconds; then every 2 h
BATCH = 100
IDLE = 5.0  # seconds between looks when nothing woke us (due retries, other instances)
METRICS_EVERY = 1.0  # seconds: the backlog gauges are at most this stale while busy
PACE = 0.1  # seconds: a busy dispatcher claims at most this often (see Wakeable)


@dataclass(frozen=True, slots=True)
class Outgoing:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout: float = SEND_TIMEOUT


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (refused, timeout, …)
    error: str | None
    duration_ms: int


class Transport(Protocol):
    async def send(self, request: Outgoing) -> Answer: ...


@dataclass(frozen=True, slots=True)
class Endpoints:
    order_service_url: str
    notification_service_url: str | None
    order_service_token: str | None


def envelope(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created_at": rfc3339(event.created_at),
        "payment_id": event.payment_id,
        "order_id": event.order_id,
        "customer_id": event.customer_id,
        "data": {"object": event.data},
    }


def backoff(attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failed attempt: about 5 s, 30 s, 2 min, 10 min, 30 min,
    1 h, then every 2 h; ±20 % jitter so that retries of many events spread out."""
    base = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


_Batch = Sequence[tuple[EventDelivery, Event]]


@dataclass(frozen=True, slots=True)
class _Sent:
    """A batch sent under one claim, and what came back."""

    token: str
    at: dt.datetime
    batch: _Batch
    answers: Sequence[Answer]


class Dispatcher(Wakeable):
    def __init__(
        self,
        db: Database,
        clock: Clock,
        transport: Transport,
        signer: Signer,
        endpoints: Endpoints,
        *,
        idle: float = IDLE,
        batch: int = BATCH,
        pace: float = PACE,
    ) -> None:
        self.db = db
        self.clock = clock
        self.transport = transport
        self.signer = signer
        self.endpoints = endpoints
        self.idle = idle
        self.batch = batch
        self._metrics_at = -math.inf  # time.monotonic() of the last backlog count
        self._metrics_stale_at: float | None = None  # a count is due then
        super().__init__(pace)

    async def run(self) -> None:
        """Until `stop()`: deliver what is due, then sleep until woken, until the next retry is
        due, or `idle` seconds (an idle look is a read; only due work takes the write lock).
        A stop lets the pass in progress finish (never cancel it inside a write transaction)."""
        woken = True
        while not self._stopping:
            self._wake.clear()
            try:
                if woken:
                    _sent, due_in = await self._deliver()
                else:
                    due_in = await self._due_in()
                    if due_in <= 0:
                        _sent, due_in = await self._deliver()
                await self._refresh_metrics(force=not woken)
                # A floor: a due row another instance is claiming now is skipped, not awaited.
                wait = min(max(due_in, 0.1), self.idle)
                if self._metrics_stale_at is not None:  # recount once things are quiet
                    wait = min(wait, max(self._metrics_stale_at - time.monotonic(), 0.0))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivering events failed; will retry")
                wait = self.idle
            woken = False
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                    woken = True

    async def deliver_due(self) -> int:
        """Deliver every due delivery, batch after batch; returns how many attempts were made."""
        sent, _due_in = await self._deliver()
        await self.refresh_metrics()
        return sent

    async def _deliver(self) -> tuple[int, float]:
        """Claim, send, record-and-claim-again until nothing is due. Returns the attempts made
        and the seconds until the next delivery may go out (`idle` when none is pending)."""
        token = secrets.token_hex(16)

        async def claim(session: AsyncSession) -> tuple[_Batch, float]:
            return await self._claim(session, token)

        await self.paced()
        batch, due_in = await self.db.run(claim)
        total = 0
        while batch:
            sent_at = self.clock.now()
            answers = await asyncio.gather(*(self._send(d, e) for d, e in batch))
            sent = _Sent(token, sent_at, batch, answers)
            token = secrets.token_hex(16)

            async def record(
                session: AsyncSession, sent: _Sent = sent, token: str = token
            ) -> tuple[_Batch, float]:
                await self._record(session, sent)
                if self._stopping:  # finish what is out, take nothing new
                    return [], self.idle
                return await self._claim(session, token)

            await self.paced()  # what is committed meanwhile joins the next claim
            batch, due_in = await self.db.run(record)
            total += len(sent.batch)
        return total, due_in

    async def _claim(self, session: AsyncSession, token: str) -> tuple[_Batch, float]:
        """Lease up to `batch` due deliveries with their events; when there are none, the
        seconds until the next one is due (in the same transaction: no extra look)."""
        # This claim sees every commit that woke us so far: a wake from then on is new work.
        self._wake.clear()
        now = self.clock.now()
        repo = EventRepository(session)
        claimed = await repo.claim_due(now, limit=self.batch, token=token, lease=CLAIM_LEASE)
        if not claimed:
            due = await repo.next_due()
            return [], self.idle if due is None else (due - now).total_seconds()
        events = await repo.events([d.event_id for d in claimed])
        return [(d, events[d.event_id]) for d in claimed], 0.0

    async def _send(self, delivery: EventDelivery, event: Event) -> Answer:
        request = self._request(delivery, event)
        if request is None:
            return Answer(None, "destination not configured", 0)
        started = time.perf_counter()
        try:
            return await self.transport.send(request)
        except Exception as error:  # a transport must not stop the others
            log.exception("sending event %s failed unexpectedly", event.id)
            elapsed = int((time.perf_counter() - started) * 1000)
            return Answer(None, type(error).__name__, elapsed)

    def _request(self, delivery: EventDelivery, event: Event) -> Outgoing | None:
        ends = self.endpoints
        order = quote(event.order_id, safe="")
        headers = {"Content-Type": "application/json"}
        body: dict[str, Any]
        if delivery.destination == "order":
            method, url = "POST", f"{ends.order_service_url}/orders/{order}/payment-events"
            body = envelope(event)
        elif delivery.destination == "notification" and ends.notification_service_url:
            method, url = "POST", f"{ends.notification_service_url}/notifications"
            body = envelope(event)
            if event.receipt_email is not None:
                body["receipt_email"] = event.receipt_email
        elif delivery.destination == "order-status" and ends.order_service_token:
            method, url = "PUT", f"{ends.order_service_url}/orders/{order}/status"
            verb = event.type.removeprefix("payment.")
            body = {"status": "CONFIRMED", "notes": f"payment {event.payment_id} {verb}"}
            headers["Authorization"] = f"Bearer {ends.order_service_token}"
        else:
            return None
        text = json.dumps(body, separators=(",", ":"))
        headers.update(self.signer.headers(event.id, text))
        return Outgoing(method, url, headers, text.encode())

    async def _record(self, session: AsyncSession, sent: _Sent) -> None:
        """Record the attempts of a batch on the deliveries this claim still owns."""
        repo = EventRepository(session)
        now, sent_at = self.clock.now(), sent.at
        owned = await repo.claimed([delivery.id for delivery, _event in sent.batch], sent.token)
        attempts: list[dict[str, object]] = []
        for (claimed, event), answer in zip(sent.batch, sent.answers, strict=True):
            delivery = owned.get(claimed.id)
            if delivery is None:  # redelivered or re-claimed meanwhile: theirs to record
                continue
            attempts.append(
                {
                    "delivery_id": delivery.id,
                    "attempted_at": sent_at,
                    "status_code": answer.status,
                    "error": answer.error,
                    "duration_ms": answer.duration_ms,
                }
            )
            delivery.attempts += 1
            delivery.last_attempt_at = sent_at
            delivery.last_status_code = answer.status
            delivery.last_error = answer.error
            delivery.claim_token = delivery.claimed_until = None
            outcome = _outcome(delivery.destination, answer)
            if outcome == "retry":
                delivery.next_attempt_at = now + backoff(delivery.attempts)
                if delivery.next_attempt_at > delivery.give_up_at:
                    outcome = "dead"
            if outcome != "retry":
                delivery.status = outcome
            if outcome == "delivered":
                delivery.delivered_at = now
            if outcome in ("dead", "failed"):
                log.warning(
                    "event delivery %s: %s %s to %s after %d attempts (last: %s)",
                    outcome,
                    event.id,
                    event.type,
                    delivery.destination,
                    delivery.attempts,
                    answer.status or answer.error,
                )
            metrics.ATTEMPTS.labels(delivery.destination, outcome).inc()
        await repo.add_attempts(attempts)

    async def _due_in(self) -> float:
        """Seconds until the next delivery may go out (≤ 0: now); `idle` when none is pending."""

        async def work(session: AsyncSession) -> dt.datetime | None:
            return await EventRepository(session).next_due()

        due = await self.db.run(work, write=False)
        return self.idle if due is None else (due - self.clock.now()).total_seconds()

    async def _refresh_metrics(self, *, force: bool) -> None:
        """Recount the backlog gauges when forced or `METRICS_EVERY` seconds after the last
        count; otherwise note that a recount is due (`run` wakes for it if nothing else comes)."""
        now = time.monotonic()
        if force or now - self._metrics_at >= METRICS_EVERY:
            await self.refresh_metrics()
        elif self._metrics_stale_at is None:
            self._metrics_stale_at = self._metrics_at + METRICS_EVERY

    async def refresh_metrics(self) -> None:
        async def work(session: AsyncSession) -> None:
            backlog = await EventRepository(session).backlog()
            metrics.PENDING.set(backlog.pending)
            metrics.DEAD.set(backlog.dead)
            oldest = backlog.oldest_pending
            metrics.OLDEST.set(
                0 if oldest is None else max((self.clock.now() - oldest).total_seconds(), 0)
            )

        await self.db.run(work, write=False)
        self._metrics_at, self._metrics_stale_at = time.monotonic(), None


def _outcome(destination: str, answer: Answer) -> str:
    if answer.status is not None and 200 <= answer.status < 300:
        return "delivered"
    if answer.error == "destination not configured":
        return "failed"
    if (
        destination == "order-status"
        and answer.status is not None
        and 400 <= answer.status < 500
        and answer.status not in (408, 429)
    ):
        return "failed"
    return "retry"
