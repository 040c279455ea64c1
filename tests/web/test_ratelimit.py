from __future__ import annotations

import pytest

from paysvc.web.ratelimit import TokenBuckets, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_denied_with_retry_after() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    wait = buckets.take("a")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == 1


def test_refill_over_time() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=1, burst=2, clock=clock)
    assert buckets.take("a") is None
    assert buckets.take("a") is None
    assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.75)
    clock.now += 0.75
    assert buckets.take("a") is None
    assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 100  # refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(3)][:2] == [None, None]


def test_slow_rate_retry_after_rounds_up() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=0.1, burst=1, clock=clock)
    assert buckets.take("a") is None
    wait = buckets.take("a")
    assert wait == pytest.approx(10.0)
    clock.now += 2.5
    wait = buckets.take("a")
    assert wait == pytest.approx(7.5)
    assert retry_after(wait) == 8


def test_keys_are_independent() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=1, burst=1, clock=clock)
    assert buckets.take("alice") is None
    assert buckets.take("alice") is not None
    assert buckets.take("bob") is None
    assert buckets.take("10.0.0.1") is None


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=1, burst=5, clock=clock, max_keys=100)
    for i in range(1000):
        buckets.take(f"k{i}")
    assert len(buckets) == 100
    clock.now += 10  # every bucket has refilled: all are dropped on the next call
    buckets.take("fresh")
    assert len(buckets) == 1


def test_recently_used_key_survives_eviction() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=1, burst=1, clock=clock, max_keys=3)
    buckets.take("hot")
    buckets.take("b")
    buckets.take("hot")  # denied, and now most recently used
    buckets.take("c")
    buckets.take("d")  # evicts "b", the least recently used
    assert buckets.take("hot") is not None


def test_clock_going_backwards_is_harmless() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=1, burst=1, clock=clock)
    assert buckets.take("a") is None
    clock.now -= 50
    assert buckets.take("a") is not None


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_second=0, burst=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_second=1, burst=0)
