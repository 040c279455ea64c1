"""The ledger's metrics, on the default Prometheus registry: operations pending and unknown
and the age of the oldest open one (gauges, updated by every completer pass), and refunds the
gateway reversed (a counter)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OPERATIONS_PENDING = Gauge(
    "paysvc_operations_pending", "Gateway operations waiting for their answer"
)
OPERATIONS_UNKNOWN = Gauge(
    "paysvc_operations_unknown",
    "Gateway operations without an answer past the gateway's idempotency window (for a human)",
)
OLDEST_OPEN_AGE = Gauge(
    "paysvc_operations_oldest_open_age_seconds",
    "Age of the oldest operation that is pending or unknown (0 when there is none)",
)
REFUND_REVERSALS = Counter(
    "paysvc_refund_reversals_total", "Refunds the gateway reversed after they had succeeded"
)
