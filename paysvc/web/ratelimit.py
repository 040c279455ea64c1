"""Token buckets per key (principal id, or client IP for unauthenticated requests).

In-process and per instance: with N instances behind a load balancer each enforces its own
budget, so the effective limit is up to N times the configured one. That is the usual trade for
a hot path that never touches the database; a shared limiter (Redis) can replace this class
behind the same `take()` interface.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """`take(key)` spends one token: None when allowed, else seconds until a token is there.

    Memory is bounded: buckets are kept in least-recently-used order; idle buckets that have
    refilled completely are dropped (a new bucket starts full, so that is invisible to clients),
    and when `max_keys` is reached the least recently used bucket is evicted.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate_per_second <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_second must be > 0, burst >= 1, max_keys >= 1")
        self.rate = float(rate_per_second)
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._refill_seconds = burst / self.rate  # time for an empty bucket to be full again

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        now = self._clock()
        self._drop_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def _drop_idle(self, now: float) -> None:
        """Drop buckets, oldest first, that have been idle long enough to be full again."""
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < self._refill_seconds:
                return
            del self._buckets[key]


def retry_after(seconds: float) -> int:
    """The `Retry-After` header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
