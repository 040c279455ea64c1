"""The seeded randomized simulation: payments through the whole HTTP stack, with faults,
crashes, retries, late webhooks and the completer, then the money invariants.

One run (`simulate(database_url, seed)`) is a sequence of steps chosen by a seeded RNG:

- a **client step**: one payment flow sends its next request (create, confirm, capture, cancel,
  refund) with its Idempotency-Key to one of the instances — sometimes twice at once, sometimes
  together with another flow's; a request that got no answer (lost, `idempotency_key_in_use`,
  503, the instance crashed, the client gave up waiting) is retried later with the same key;
- the **completer** runs on one instance after the clock moved forward by a random amount
  (sometimes past the gateway's 24 h idempotency window; sometimes with the gateway's search
  lagging; sometimes it is itself crashed half-way);
- **webhooks**: Stripe events built from the gateway's ledger (what it holds now) are delivered
  at once, again later (duplicates), or after newer ones (reordered, late);
- an **instance crash**: requests (and a completer run) are started on an instance and, after
  a random number of event-loop turns, every task of that instance is cancelled where it
  stands; a new container and app are built over the same database;
- **late work lands** at the gateway (a call that hung past its deadline and succeeded later).

The gateway is the sandbox behind `tests/faults.py`'s FaultyGateway (one, shared by all
instances, as a remote gateway is), whose chooser injects faults with the run's RNG. At the
end faults stop, late work lands, every unanswered request is retried, the completer runs to
quiescence and the invariants are checked (tests/simulation/invariants.py).

A run is decided by its seed (the plan, the faults, the crash points); the interleaving of
database I/O can still vary, so a replay is the same scenario, not always the same trace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from paysvc.auth.principal import SYSTEM
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.gateways.base import STRIPE_IDEMPOTENCY_WINDOW as WINDOW
from paysvc.gateways.base import Gateway
from paysvc.gateways.sandbox import SandboxCharge, SandboxRefund
from paysvc.web.app import create_app
from tests.conftest import SERVICE, auth, make_settings
from tests.faults import LOOKUPS, MUTATIONS, Fault, FaultyGateway
from tests.simulation.invariants import (
    Journal,
    keyed_violations,
    ledger_violations,
    unknown_operations,
    waiting_on_unknown,
)
from tests.stripe_events import WEBHOOK_SECRET, event, intent, refund_object, signed
from tests.support import ManualClock


def retry_later(status: int, body: dict[str, Any]) -> bool:
    """An answer that executed nothing (429, 503, a conflict with a request still running):
    the client retries with the same key. Anything else is the request's outcome."""
    code = (body.get("error") or {}).get("code")
    return status in (429, 503) or (
        status == 409 and code in ("idempotency_key_in_use", "operation_in_progress")
    )


CARDS = [
    ("pm_card_visa", 50),
    ("pm_card_mastercard", 10),
    ("pm_card_timeout", 10),
    ("pm_card_refundFail", 8),
    ("pm_card_chargeDeclined", 6),
    ("pm_card_chargeDeclinedInsufficientFunds", 4),
]
MUTATION_FAULTS = [
    Fault.HANG,
    Fault.LOSE_REQUEST,
    Fault.LOSE_ANSWER,
    Fault.LAND_LATE,
    Fault.IDEMPOTENCY_ERROR,
    Fault.UNAVAILABLE,
]
LOOKUP_FAULTS = [Fault.LOOKUP_ABSENT, Fault.LOOKUP_ERROR]
CLIENT_PATIENCE = 2.0  # seconds a client waits for an answer before it gives up (and retries)
STALE = 30.0  # OPERATION_STALE_SECONDS: moved past by the clock, never waited for
RECONCILE_SINCE = dt.timedelta(days=90)  # every payment of a run (its clock moves days)


@dataclass
class Options:
    payments: int = 12
    steps: int = 160
    fault_rate: float = 0.3
    crash_rate: float = 0.04
    # Per completer step: the clock jumps past the gateway's idempotency window (24 h).
    window_rate: float = 0.03
    instances: int = 2


@dataclass
class Result:
    seed: int
    violations: list[str]
    requests: int = 0
    crashes: int = 0
    interrupted: int = 0  # tasks (requests, completer passes) a crash cancelled mid-way
    completer_runs: int = 0
    webhooks: int = 0
    faults: int = 0
    unknown: int = 0  # operations left `unknown` (past the window), each reported by reconcile
    parked: int = 0  # requests whose operation is unknown: answered 409 until a human decides

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.requests} requests, {self.faults} faults, "
            f"{self.crashes} crashes ({self.interrupted} tasks cut), "
            f"{self.completer_runs} completer runs, "
            f"{self.webhooks} webhook deliveries, {self.unknown} unknown operations "
            f"({self.parked} requests waiting on them), "
            f"{len(self.violations)} violations"
        )


@dataclass
class Request:
    key: str
    headers: dict[str, str]
    path: str
    body: dict[str, Any]
    refused: str = "no answer"  # the last answer that executed nothing, for the report


@dataclass
class Flow:
    """One payment's client: the next request is decided by the answers so far."""

    n: int
    rng: random.Random
    customer: dict[str, str]
    payment: dict[str, Any] | None = None
    pending: Request | None = None  # sent, not answered yet: retried with the same key
    done: bool = False
    steps: int = 0
    stale: bool = False  # the last answer was not the payment: look at it before going on

    def next_request(self, run: str) -> Request | None:
        if self.pending is not None:
            return self.pending
        if self.done or self.stale:
            return None
        if self.steps >= 8:
            self.done = True
            return None
        self.steps += 1
        key = f"{run}-{self.n}-{self.steps}"
        rng = self.rng
        if self.payment is None:
            # Some odd flows pay the order of the flow before them (the order guard).
            order = self.n - 1 if self.n % 2 == 1 and rng.random() < 0.4 else self.n
            body: dict[str, Any] = {
                "order_id": f"{run}-order-{order}",
                "amount": rng.randint(500, 5000),
                "currency": "usd",
                "metadata": {"request_key": key},
            }
            if rng.random() < 0.35:
                body["capture_method"] = "manual"
            return Request(key, self.customer, "/payments/intents", body)
        pid, status = self.payment["id"], self.payment["status"]
        if status == "pending":
            card = rng.choices([c for c, _ in CARDS], [w for _, w in CARDS])[0]
            return Request(key, self.customer, f"/payments/{pid}/confirm", {"payment_method": card})
        if status in ("processing", "requires_action"):
            self.stale = True  # the completer (or a webhook) settles it; look again later
            return None
        if status == "authorized":
            if rng.random() < 0.65:
                body = (
                    {}
                    if rng.random() < 0.5
                    else {"amount_to_capture": rng.randint(1, self.payment["amount"])}
                )
                return Request(key, SERVICE, f"/payments/{pid}/capture", body)
            return Request(key, self.customer, f"/payments/{pid}/cancel", {})
        if status in ("captured", "partially_refunded") and rng.random() < 0.8:
            if rng.random() < 0.15:
                return Request(
                    key, SERVICE, f"/payments/{pid}/cancel", {"refund_if_captured": True}
                )
            refundable = self.payment["amount_captured"] - self.payment["amount_refunded"]
            body = {"metadata": {"request_key": key}}
            if rng.random() < 0.75:
                body["amount"] = rng.randint(1, max(1, refundable))
            return Request(key, SERVICE, f"/payments/{pid}/refunds", body)
        self.done = True
        return None

    def answered(self, request: Request, status: int, body: dict[str, Any]) -> None:
        self.pending = None
        if body.get("object") == "payment":
            self.payment = body
        elif "payment" in (body.get("error") or {}):
            self.payment = body["error"]["payment"]
        elif request.path == "/payments/intents":
            self.done = True  # not created
        else:
            self.stale = True  # a refund, or an error: read the payment before going on


class Instance:
    """One service instance: a container, its app and a client; every handler task is
    tracked so that a crash can cancel it wherever it stands."""

    def __init__(self, container: Container, client: TestClient[Any, Any]) -> None:
        self.container = container
        self.client = client
        self.tasks: set[asyncio.Task[Any]] = set()
        self.crashed = False

    def crash(self) -> None:
        self.crashed = True
        for task in list(self.tasks):
            task.cancel()


class World:
    def __init__(self, database_url: str, seed: int, options: Options) -> None:
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.fault_rng = random.Random(seed * 7919 + 1)
        self.run = f"sim{seed}"
        self.clock = ManualClock()
        self.settings: Settings = make_settings(
            database_url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_TIMEOUT_SECONDS="0.2",
            OPERATION_STALE_SECONDS=str(STALE),
        )
        self.faults_on = True
        self.faulty: FaultyGateway | None = None
        self.instances: list[Instance] = []
        self.retired: list[Instance] = []
        self.journal = Journal()
        self.flows = [
            Flow(n, random.Random(f"{seed}-{n}"), auth(f"c{n % 4}"))
            for n in range(options.payments)
        ]
        self.mailbox: list[dict[str, Any]] = []  # webhook events, for late and repeated delivery
        self.result = Result(seed, [])
        self.background: set[asyncio.Task[Any]] = set()

    # -- instances -----------------------------------------------------------------------

    def _wrap(self, gateway: Gateway) -> Gateway:
        """One FaultyGateway for every instance (one remote gateway); a new instance's sandbox
        (same database) becomes its inner gateway."""
        if self.faulty is None:
            self.faulty = FaultyGateway(gateway, self.clock, chooser=self._choose)
        else:
            self.faulty.inner = gateway
        return self.faulty

    def _choose(self, method: str, _subject: str) -> Fault | None:
        if not self.faults_on or self.fault_rng.random() >= self.options.fault_rate:
            return None
        self.result.faults += 1
        if method in MUTATIONS:
            return self.fault_rng.choice(MUTATION_FAULTS)
        if method in LOOKUPS:
            return self.fault_rng.choice(LOOKUP_FAULTS)
        return None

    async def start_instance(self) -> Instance:
        container = build_container(self.settings, clock=self.clock, wrap_gateway=self._wrap)
        app = create_app(container, own_container=False)
        holder: list[Instance] = []

        @web.middleware
        async def track(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            instance = holder[0]
            if instance.crashed:
                raise ConnectionResetError("instance crashed")
            instance.tasks.add(task)
            try:
                return await handler(request)
            finally:
                instance.tasks.discard(task)

        app.middlewares.insert(0, track)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        instance = Instance(container, client)
        holder.append(instance)
        return instance

    async def crash(self, index: int) -> None:
        victim = self.instances[index]
        self.result.interrupted += sum(not task.done() for task in victim.tasks)
        victim.crash()
        self.retired.append(victim)
        self.instances[index] = await self.start_instance()
        self.result.crashes += 1

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for instance in self.instances + self.retired:
            instance.crash()
        if self.faulty is not None:
            await self.faulty.land()
        for instance in self.instances + self.retired:
            await instance.client.close()
        for instance in self.instances + self.retired:
            await instance.container.close()

    # -- the client ----------------------------------------------------------------------

    async def send(self, flow: Flow, request: Request, instance: Instance) -> None:
        self.journal.sent.add(request.key)
        self.result.requests += 1
        headers = {**request.headers, "Idempotency-Key": request.key}
        call = instance.client.post(request.path, json=request.body, headers=headers)
        task = asyncio.ensure_future(self._post(call))
        self.background.add(task)
        try:
            answer = await asyncio.wait_for(asyncio.shield(task), CLIENT_PATIENCE)
        except TimeoutError:
            answer = None  # the client gives up waiting; its request may still be running
        if answer is None:
            flow.pending = request
            request.refused = "no answer"
            return
        status, body = answer
        if retry_later(status, body):
            flow.pending = request
            request.refused = f"{status} {(body.get('error') or {}).get('code')}"
            return
        self.journal.answered(request.key, status, body)
        if status == 500:
            self.result.violations.append(f"server_error: {request.path} {body}")
        flow.answered(request, status, body)

    @staticmethod
    async def _post(call: Any) -> tuple[int, dict[str, Any]] | None:
        try:
            async with call as response:
                return response.status, await response.json()
        except (ClientError, ConnectionError, json.JSONDecodeError, asyncio.CancelledError):
            return None

    async def refresh(self, flow: Flow) -> None:
        """A flow reads its payment again (after a refund, an error, or while it settles)."""
        if flow.payment is None:
            return
        response = await self.rng.choice(self.instances).client.get(
            f"/payments/{flow.payment['id']}", headers=SERVICE
        )
        if response.status == 200:
            flow.payment = await response.json()
            flow.stale = False

    async def client_step(self) -> None:
        rng = self.rng
        active = [f for f in self.flows if not f.done]
        if not active:
            return
        flow = rng.choice(active)
        request = flow.next_request(self.run)
        if request is None:
            await self.refresh(flow)
            request = flow.next_request(self.run)
        if request is None:
            return
        instance = rng.choice(self.instances)
        if rng.random() < 0.15:  # the same request twice at once (a client retry racing)
            other = rng.choice(self.instances)
            await asyncio.gather(
                self.send(flow, request, instance), self.send(flow, request, other)
            )
            return
        await self.send(flow, request, instance)

    # -- the rest of the world ------------------------------------------------------------

    async def completer(self, instance: Instance | None = None) -> None:
        """One pass of the completer (the background pass every instance runs)."""
        instance = instance or self.rng.choice(self.instances)
        self.result.completer_runs += 1
        await instance.container.reconcile.run_once()

    async def completer_step(self) -> None:
        if self.rng.random() < self.options.window_rate:
            self.clock.advance(WINDOW.total_seconds() + 3600)  # a day-long outage
        else:
            self.clock.advance(self.rng.choice([0.0, STALE / 2, STALE * 1.5, STALE * 3]))
        if self.faulty is not None and self.faults_on and self.rng.random() < 0.2:
            self.faulty.lookup_lag = self.rng.randint(1, 4)  # the gateway's search lags
        await self.completer()

    async def snapshot_webhook(self) -> None:
        """Build Stripe events from what the gateway holds now, for delivery now or later."""
        container = self.instances[0].container
        async with container.db.transaction(write=False) as session:
            charges = list(await session.scalars(select(SandboxCharge)))
            refunds = list(await session.scalars(select(SandboxRefund)))
        if charges and (not refunds or self.rng.random() < 0.6):
            self.mailbox.append(charge_event(self.rng.choice(charges)))
        elif refunds:
            assert self.faulty is not None
            truth = await self.faulty.inner.retrieve_refund(self.rng.choice(refunds).reference)
            kind = "refund.failed" if truth.status == "failed" else "refund.updated"
            self.mailbox.append(event(kind, refund_object(truth)))

    async def deliver_webhook(self) -> None:
        if not self.mailbox:
            return
        # Mostly the newest; sometimes an older one again (duplicate, reordered, late).
        payload = self.mailbox[-1] if self.rng.random() < 0.6 else self.rng.choice(self.mailbox)
        body = json.dumps(payload).encode()
        headers = signed(body, timestamp=int(self.clock.now().timestamp()))
        instance = self.rng.choice(self.instances)
        self.result.webhooks += 1
        response = await instance.client.post("/webhooks/stripe", data=body, headers=headers)
        if response.status == 500:
            text = await response.text()
            self.result.violations.append(
                f"webhook_error: {response.status} {payload['type']} {text[:200]}"
            )

    async def crash_step(self) -> None:
        """Requests (and maybe a completer pass) start on one instance; after a random number
        of event-loop turns every task of that instance is cancelled where it stands."""
        index = self.rng.randrange(len(self.instances))
        instance = self.instances[index]
        started: list[asyncio.Task[Any]] = []
        for flow in self.rng.sample(self.flows, k=min(2, len(self.flows))):
            request = flow.next_request(self.run)
            if request is not None:
                started.append(asyncio.ensure_future(self.send(flow, request, instance)))
        if self.rng.random() < 0.3:
            completing = asyncio.ensure_future(instance.container.reconcile.run_once())
            instance.tasks.add(completing)
            started.append(completing)
        for _ in range(self.rng.randrange(1, 60)):
            await asyncio.sleep(0)
        await self.crash(index)
        await asyncio.gather(*started, return_exceptions=True)

    async def step(self) -> None:
        roll = self.rng.random()
        if roll < self.options.crash_rate:
            await self.crash_step()
        elif roll < 0.12:
            await self.completer_step()
        elif roll < 0.20:
            await self.snapshot_webhook()
        elif roll < 0.28:
            await self.deliver_webhook()
        elif roll < 0.31:
            assert self.faulty is not None
            await self.faulty.land()
        else:
            await self.client_step()

    # -- the end --------------------------------------------------------------------------

    async def finish(self) -> None:
        """Faults stop, late work lands, the completer runs to quiescence (and the operator's
        `paysvc reconcile --apply`), every client retries until answered, and once more."""
        self.faults_on = False
        assert self.faulty is not None
        self.faulty.lookup_lag = 0
        await self.quiesce()
        for _ in range(30):
            waiting = [f for f in self.flows if f.pending is not None]
            if not waiting:
                break
            self.clock.advance(STALE * 2)  # past every take-over window
            await self.completer()
            for flow in waiting:
                request = flow.pending
                assert request is not None
                await self.send(flow, request, self.rng.choice(self.instances))
        await self.quiesce()

    async def quiesce(self) -> None:
        assert self.faulty is not None
        for _ in range(10):
            await self.faulty.land()
            self.clock.advance(STALE * 3)
            await self.completer()
        # The operator's `paysvc reconcile --apply`: asks about unknown operations too.
        await self.instances[0].container.reconcile.run(RECONCILE_SINCE, True, actor=SYSTEM)

    async def unanswered(self) -> None:
        """A request still unanswered is a violation, unless an unknown operation holds it."""
        unanswered = {f.pending.key: f.pending for f in self.flows if f.pending is not None}
        self.journal.sent -= set(unanswered)
        container = self.instances[0].container
        parked = await waiting_on_unknown(container, {key: r.path for key, r in unanswered.items()})
        self.result.parked = len(parked)
        self.result.violations += [
            f"key_unanswered: {key} {r.path} (last: {r.refused})"
            for key, r in unanswered.items()
            if key not in parked
        ]

    async def check(self) -> None:
        container = self.instances[0].container
        unknown = await unknown_operations(container)
        self.result.unknown = len(unknown)
        if unknown:  # every reconcile run lists each of them
            report = await container.reconcile.run(RECONCILE_SINCE, False, actor=SYSTEM)
            listed = json.dumps(report.as_dict())
            self.result.violations += [
                f"unknown_not_reported: {op.id}" for op in unknown if op.id not in listed
            ]
        self.result.violations += self.journal.violations()
        self.result.violations += await ledger_violations(container)
        self.result.violations += await keyed_violations(container, self.journal)


def charge_event(charge: SandboxCharge) -> dict[str, Any]:
    status, kind = {
        "captured": ("succeeded", "payment_intent.succeeded"),
        "authorized": ("requires_capture", "payment_intent.amount_capturable_updated"),
        "canceled": ("canceled", "payment_intent.canceled"),
        "failed": ("requires_payment_method", "payment_intent.payment_failed"),
    }[charge.status]
    error = (
        {
            "code": "card_declined",
            "decline_code": charge.decline_code or "generic_decline",
            "message": "Your card was declined.",
        }
        if charge.status == "failed"
        else None
    )
    obj = intent(
        charge.reference,
        status,
        amount=charge.amount,
        received=charge.amount_captured,
        capturable=charge.amount_capturable,
        payment_id=charge.payment_id,
        error=error,
    )
    return event(kind, obj)


async def simulate(database_url: str, seed: int, options: Options | None = None) -> Result:
    world = World(database_url, seed, options or Options())
    try:
        world.instances = [await world.start_instance() for _ in range(world.options.instances)]
        for _ in range(world.options.steps):
            await world.step()
        await world.finish()
        await world.unanswered()
        await world.check()
    finally:
        await world.close()
    return world.result
