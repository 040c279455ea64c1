"""Outbox metrics, on the process's default Prometheus registry (set by the dispatcher)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PENDING = Gauge("paysvc_events_pending", "Event deliveries waiting to be delivered")
DEAD = Gauge("paysvc_events_dead", "Event deliveries given up on (dead)")
OLDEST = Gauge(
    "paysvc_events_oldest_pending_age_seconds",
    "Age of the oldest event with a delivery still pending (0 when none)",
)
ATTEMPTS = Counter(
    "paysvc_events_delivery_attempts",
    "Event delivery attempts by destination and outcome",
    ["destination", "outcome"],
)
