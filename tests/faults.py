"""A fault-injecting gateway for tests: the sandbox (or any Gateway), failing the way real
gateways fail in production.

Install it through bootstrap, so the whole stack (HTTP, services, completer) runs over it:

    faulty: FaultyGateway | None = None

    def wrap(gateway: Gateway) -> Gateway:
        nonlocal faulty
        faulty = FaultyGateway(gateway, clock)
        return faulty

    container = build_container(settings, clock=clock, wrap_gateway=wrap)

or simply `container, faulty = faulty_container(settings, clock)`.

Knobs, per call (`plan(method, fault, ...)` queues one fault for each of the next calls of
`method`, in order; `always(method, fault)` applies it to every call; `chooser` decides for
calls nothing was planned for, e.g. a seeded random choice in a simulation):

- `Fault.HANG` — delay past the caller's deadline: the call never answers and does nothing
  (the caller's timeout cancels it);
- `Fault.LOSE_REQUEST` — the request is lost on the way: nothing happens, the caller gets
  `OutcomeUnknown` (a connection reset before the gateway read it);
- `Fault.LOSE_ANSWER` — the gateway does the work, then the answer is lost: `OutcomeUnknown`;
- `Fault.LAND_LATE` — the call hangs past the caller's deadline, and the work lands later,
  when the test calls `await faulty.land()` (after the caller gave up);
- `Fault.SLOW` — a slow answer: the call waits until `await faulty.land()`, then does the
  work and answers (to a caller whose deadline is longer than the wait);
- `Fault.IDEMPOTENCY_ERROR` — the gateway refuses with an idempotency error ("this key is in
  use"): `OutcomeUnknown`, as the Stripe adapter maps `stripe.IdempotencyError`; the work is
  done first (the key *was* used), as when an earlier attempt with the key is still running;
- `Fault.UNAVAILABLE` — could not connect: `GatewayUnavailable`, nothing happened;
- `Fault.LOOKUP_ABSENT` — for lookups (`find_payment`, `find_refund`, `retrieve_*`): the
  gateway answers "no such object" (`None`, or `GatewayRejected` for `retrieve_*`) although it
  may hold it (search lag, a scan that does not reach it);
- `Fault.LOOKUP_ERROR` — a lookup cannot be answered: `GatewayUnavailable`.

`lookup_lag = N` makes the next N lookups answer "absent" (lagging search index).

`after(method, hook)` runs `await hook()` once, right after the next call of `method` did its
work and before it answers (crash the caller's world there: cut the database, cancel a task).

Forgetting keys: `window` (default 24 h) is the gateway's idempotency window. A key first used
more than `window` ago (by `clock`) is forgotten: a later call with it executes again, as a new
request — exactly the danger the ledger's `unknown` status guards against. `forgotten` counts
such re-executions.

`calls` records every call as `(method, key or reference, fault or None)`; `await called(method,
n)` waits for the n-th call; `land()` awaits the late work; `pending_late` tells whether some is
still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from paysvc.bootstrap import Container, build_container
from paysvc.clock import Clock
from paysvc.config import Settings
from paysvc.gateways.base import (
    STRIPE_IDEMPOTENCY_WINDOW,
    ChargeRequest,
    Gateway,
    GatewayPayment,
    GatewayRefund,
    GatewayRejected,
    GatewayUnavailable,
    OutcomeUnknown,
    RefundRequest,
)

T = TypeVar("T")
MUTATIONS = ("charge", "capture", "cancel", "refund")
LOOKUPS = ("find_payment", "find_refund", "retrieve_payment", "retrieve_refund")


class Fault(enum.Enum):
    HANG = "hang"
    LOSE_REQUEST = "lose_request"
    LOSE_ANSWER = "lose_answer"
    LAND_LATE = "land_late"
    SLOW = "slow"
    IDEMPOTENCY_ERROR = "idempotency_error"
    UNAVAILABLE = "unavailable"
    LOOKUP_ABSENT = "lookup_absent"
    LOOKUP_ERROR = "lookup_error"


class FaultyGateway:
    def __init__(
        self,
        inner: Gateway,
        clock: Clock,
        *,
        window: dt.timedelta = STRIPE_IDEMPOTENCY_WINDOW,
        chooser: Callable[[str, str], Fault | None] | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.idempotency_window = window
        self.chooser = chooser
        self.lookup_lag = 0
        self.calls: list[tuple[str, str, Fault | None]] = []
        self.forgotten = 0
        self._planned: defaultdict[str, deque[Fault]] = defaultdict(deque)
        self._always: dict[str, Fault] = {}
        self._first_use: dict[str, dt.datetime] = {}
        self._generation: dict[str, int] = {}
        self._gate = asyncio.Event()
        self._late: set[asyncio.Task[Any]] = set()
        self._after: dict[str, Callable[[], Awaitable[None]]] = {}
        self._new_call = asyncio.Event()

    # -- knobs ---------------------------------------------------------------------------

    def plan(self, method: str, *faults: Fault) -> None:
        """The next calls of `method` meet these faults, one each, in order."""
        self._planned[method].extend(faults)

    def always(self, method: str, fault: Fault | None) -> None:
        if fault is None:
            self._always.pop(method, None)
        else:
            self._always[method] = fault

    def after(self, method: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` once, after the next `method` call did its work, before it answers."""
        self._after[method] = hook

    async def land(self) -> None:
        """Let the late work land, and wait until it has."""
        self._gate.set()
        while self._late:
            await asyncio.gather(*list(self._late), return_exceptions=True)
        self._gate = asyncio.Event()

    @property
    def pending_late(self) -> bool:
        return bool(self._late)

    async def called(self, method: str, times: int = 1) -> None:
        """Wait until `method` has been called `times` times (no polling)."""
        while self.count(method) < times:
            self._new_call.clear()
            await self._new_call.wait()

    def _record(self, method: str, subject: str, fault: Fault | None) -> None:
        self.calls.append((method, subject, fault))
        self._new_call.set()

    def count(self, method: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == method)

    # -- the Gateway protocol ------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        key = self._key(request.idempotency_key)
        return await self._mutate(
            "charge",
            request.idempotency_key,
            lambda: self.inner.charge(replace(request, idempotency_key=key)),
        )

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        key = self._key(idempotency_key)
        return await self._mutate(
            "capture", idempotency_key, lambda: self.inner.capture(reference, amount, key)
        )

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        key = self._key(idempotency_key)
        return await self._mutate(
            "cancel", idempotency_key, lambda: self.inner.cancel(reference, key)
        )

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        key = self._key(request.idempotency_key)
        return await self._mutate(
            "refund",
            request.idempotency_key,
            lambda: self.inner.refund(replace(request, idempotency_key=key)),
        )

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        if await self._lookup_fault("retrieve_payment", reference):
            raise GatewayRejected(f"faulty: no such payment {reference}")
        return await self.inner.retrieve_payment(reference)

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        if await self._lookup_fault("find_payment", payment_id):
            return None
        return await self.inner.find_payment(payment_id)

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        if await self._lookup_fault("retrieve_refund", reference):
            raise GatewayRejected(f"faulty: no such refund {reference}")
        return await self.inner.retrieve_refund(reference)

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        if await self._lookup_fault("find_refund", refund_id):
            return None
        return await self.inner.find_refund(refund_id)

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def close(self) -> None:
        for task in list(self._late):
            task.cancel()
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # force_capture and the other sandbox extras

    # -- machinery -----------------------------------------------------------------------

    def _next_fault(self, method: str, subject: str) -> Fault | None:
        if self._planned[method]:
            return self._planned[method].popleft()
        if method in self._always:
            return self._always[method]
        return self.chooser(method, subject) if self.chooser is not None else None

    def _key(self, key: str) -> str:
        """The key the inner gateway sees: a new one once the window has forgotten `key`."""
        now = self.clock.now()
        first = self._first_use.setdefault(key, now)
        if now - first >= self.idempotency_window:
            self._first_use[key] = now
            self._generation[key] = self._generation.get(key, 0) + 1
            self.forgotten += 1
        generation = self._generation.get(key, 0)
        return key if generation == 0 else f"{key}~forgotten{generation}"

    async def _mutate(self, method: str, key: str, work: Callable[[], Awaitable[T]]) -> T:
        fault = self._next_fault(method, key)
        self._record(method, key, fault)
        if fault is None:
            answer = await work()
            hook = self._after.pop(method, None)
            if hook is not None:
                await hook()
            return answer
        if fault is Fault.HANG:
            await asyncio.Event().wait()
        if fault is Fault.LAND_LATE:
            task = asyncio.get_running_loop().create_task(self._after_gate(work))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            await asyncio.Event().wait()
        if fault is Fault.SLOW:
            waiter = asyncio.get_running_loop().create_task(self._gate.wait())
            self._late.add(waiter)
            waiter.add_done_callback(self._late.discard)
            await waiter
            return await work()
        if fault is Fault.UNAVAILABLE:
            raise GatewayUnavailable(f"faulty: could not connect ({method})")
        if fault is Fault.LOSE_REQUEST:
            raise OutcomeUnknown(f"faulty: {method} request lost")
        if fault in (Fault.LOSE_ANSWER, Fault.IDEMPOTENCY_ERROR):
            with contextlib.suppress(Exception):  # whatever it said, the caller never hears it
                await work()
            if fault is Fault.IDEMPOTENCY_ERROR:
                raise OutcomeUnknown(f"faulty: {method}: idempotency key in use (IdempotencyError)")
            raise OutcomeUnknown(f"faulty: {method} answer lost")
        return await work()  # a lookup fault planned for a mutation: no effect

    async def _after_gate(self, work: Callable[[], Awaitable[T]]) -> None:
        await self._gate.wait()
        with contextlib.suppress(Exception):  # it landed (or was refused) after all listeners left
            await work()

    async def _lookup_fault(self, method: str, subject: str) -> bool:
        """True when the lookup must answer "absent"; raises for an unanswerable one."""
        fault = self._next_fault(method, subject)
        self._record(method, subject, fault)
        if self.lookup_lag > 0:
            self.lookup_lag -= 1
            return True
        if fault is Fault.LOOKUP_ERROR:
            raise GatewayUnavailable(f"faulty: {method} could not be answered")
        if fault is Fault.HANG:
            await asyncio.Event().wait()
        return fault is Fault.LOOKUP_ABSENT


def faulty_container(
    settings: Settings, clock: Clock, **options: Any
) -> tuple[Container, FaultyGateway]:
    """A container whose (single) gateway is a FaultyGateway over the configured one."""
    made: list[FaultyGateway] = []

    def wrap(gateway: Gateway) -> Gateway:
        made.append(FaultyGateway(gateway, clock, **options))
        return made[-1]

    container = build_container(settings, clock=clock, wrap_gateway=wrap)
    return container, made[0]
