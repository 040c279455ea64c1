"""Prometheus metrics of one container: HTTP, payments, gateway calls, circuit breakers,
reconciliation and webhooks (`/metrics` also renders the default registry: process metrics,
and the gauges other modules register there).

One registry per container, so every app or test counts from zero. Counters about stored
changes move only after their transaction commits (`after_commit`): a rolled-back or retried
unit of work counts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_PENDING = "paysvc_metrics_after_commit"
# Gateway calls: from a sandbox's milliseconds to a slow Stripe call near its 20 s timeout.
GATEWAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
CIRCUIT_STATES = ("closed", "half_open", "open")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "paysvc_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "paysvc_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.payments = Counter(
            "paysvc_payments",
            "Payments reaching a status (created = pending), by gateway and currency",
            ["status", "gateway", "currency"],
            registry=registry,
        )
        self.payment_amount = Counter(
            "paysvc_payments_amount_minor_units",
            "Sum of the amounts (currency minor units) of payments reaching a status",
            ["status", "gateway", "currency"],
            registry=registry,
        )
        self.gateway_calls = Counter(
            "paysvc_gateway_calls",
            "Gateway calls by gateway, operation and outcome "
            "(ok, declined, rejected, unavailable, unknown, error)",
            ["gateway", "operation", "outcome"],
            registry=registry,
        )
        self.gateway_latency = Histogram(
            "paysvc_gateway_call_duration_seconds",
            "Gateway call latency by gateway and operation",
            ["gateway", "operation"],
            buckets=GATEWAY_BUCKETS,
            registry=registry,
        )
        self.reconcile_runs = Counter(
            "paysvc_reconcile_runs",
            "Reconciliation runs by trigger (background, cli) and outcome (ok, error)",
            ["trigger", "outcome"],
            registry=registry,
        )
        for trigger in ("background", "cli"):  # at 0 from the start, so increase() sees the 1st
            for outcome in ("ok", "error"):
                self.reconcile_runs.labels(trigger, outcome)
        self.reconcile_drift = Counter(
            "paysvc_reconcile_drift",
            "Drift items found by reconciliation, by kind",
            ["kind"],
            registry=registry,
        )
        self.webhooks = Counter(
            "paysvc_webhooks_received",
            "Stripe webhooks received by event type and result "
            "(applied, pending, ignored, duplicate, invalid_signature)",
            ["type", "result"],
            registry=registry,
        )

    def payment_reached(
        self, session: AsyncSession, status: str, gateway: str | None, currency: str, amount: int
    ) -> None:
        """A payment reached `status` in this unit of work (counted once it commits)."""
        labels = (status, gateway or "none", currency)

        def count() -> None:
            self.payments.labels(*labels).inc()
            self.payment_amount.labels(*labels).inc(amount)

        after_commit(session, count)

    def watch_circuits(self, states: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """`paysvc_gateway_circuit_state{gateway, state}`: 1 for the current state of each
        gateway's circuit breaker, read at scrape time from `states()` (gateway, state)."""
        self.registry.register(_CircuitCollector(states))


class _CircuitCollector(Collector):
    def __init__(self, states: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "paysvc_gateway_circuit_state",
            "Circuit breaker state per gateway: 1 for the current state (closed, half_open, open)",
            labels=["gateway", "state"],
        )
        for gateway, current in self._states():
            for state in CIRCUIT_STATES:
                family.add_metric([gateway, state], 1.0 if state == current else 0.0)
        yield family


def after_commit(
    session: AsyncSession, callback: Callable[[], None], *, once: bool = False
) -> None:
    """Run `callback` once the session's transaction commits (never if it rolls back); with
    `once`, not again if it is already waiting for this commit (e.g. a worker's `wake`).

    The callbacks wait in `session.info`; the listeners below are on the Session class, set up
    once (a listener per session cost ~50 µs to add, and more when the session was collected)."""
    pending: list[Callable[[], None]] = session.info.setdefault(_PENDING, [])
    if not (once and callback in pending):
        pending.append(callback)


@event.listens_for(Session, "after_commit")
def _run_pending(sync_session: Session) -> None:
    for callback in sync_session.info.pop(_PENDING, ()):
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_pending(sync_session: Session) -> None:
    sync_session.info.pop(_PENDING, None)
