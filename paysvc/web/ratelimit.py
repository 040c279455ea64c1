"""Rate limits per key (principal id, or client IP for unauthenticated requests).

Two limiters behind one `await limiter.take(key)` (None: allowed; else seconds to wait):
- `InstanceLimiter` (default): token buckets in process memory, per instance; with N instances
  behind a load balancer the effective limit is up to N times the configured one;
- `SharedLimiter` (`RATE_LIMIT_STORAGE_URL=redis://…`): one budget per key for every instance,
  kept in Redis by the `limits` package (its async Redis storage, on the `coredis` client): a
  moving window of `RATE_LIMIT_BURST` requests per `burst / rate` seconds (the same average
  rate and burst as the buckets). When Redis cannot be reached, requests are let through and
  the failure is logged (at most once a minute): limits protect the service, they must not take
  it down.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


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


class Limiter(Protocol):
    async def take(self, key: str) -> float | None: ...


class InstanceLimiter:
    """Token buckets in this process (per instance)."""

    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.buckets = TokenBuckets(rate_per_second, burst)

    async def take(self, key: str) -> float | None:
        return self.buckets.take(key)


class SharedLimiter:
    """One budget per key across every instance, in Redis (the `limits` package)."""

    def __init__(
        self, storage_url: str, rate_per_second: float, burst: int, prefix: str = "paysvc"
    ) -> None:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self.storage = RedisStorage(f"async+{storage_url}", key_prefix=prefix)
        self.limiter = MovingWindowRateLimiter(self.storage)
        window = max(1, round(burst / rate_per_second))
        self.item: Any = RateLimitItemPerSecond(burst, window)
        self._last_warning = -math.inf

    async def take(self, key: str) -> float | None:
        try:
            if await self.limiter.hit(self.item, key):
                return None
            stats = await self.limiter.get_window_stats(self.item, key)
        except Exception as error:  # Redis down or unreachable: fail open, say so
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning(
                    "rate limit storage unavailable, requests are not limited: %s",
                    type(error).__name__,
                )
            return None
        return max(0.0, float(stats.reset_time) - time.time())


def build_limiter(storage_url: str | None, rate_per_second: float, burst: int) -> Limiter:
    if storage_url:
        return SharedLimiter(storage_url, rate_per_second, burst)
    return InstanceLimiter(rate_per_second, burst)


def retry_after(seconds: float) -> int:
    """The `Retry-After` header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
