"""bridge.core.ratelimit: the token bucket behind a route's ``rate_limit``. Pure: the clock is a
number."""

from __future__ import annotations

import math

import pytest

from bridge.core.ratelimit import TokenBucket, default_burst


@pytest.mark.parametrize(
    ("rate", "burst"), [(50, 50), (20, 20), (1, 1), (0.5, 1), (0.001, 1), (2.5, 2.5)]
)
def test_default_burst_is_one_second_at_least_one_record(rate: float, burst: float) -> None:
    assert default_burst(rate) == burst


def test_a_full_bucket_lets_the_burst_go_at_once_then_one_per_interval() -> None:
    bucket = TokenBucket.full(rate=20, capacity=20, now=100.0)
    waits = [bucket.reserve(1, 100.0) for _ in range(25)]
    assert waits[:20] == [0.0] * 20
    assert waits[20:] == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25])


def test_waits_add_up_to_the_rate_for_any_number_of_records() -> None:
    # 100 records reserved at once at 20/s with a burst of 20: the last goes 80/20 = 4 s later
    bucket = TokenBucket.full(rate=20, capacity=20, now=0.0)
    waits = [bucket.reserve(1, 0.0) for _ in range(100)]
    assert waits[-1] == pytest.approx(4.0)
    assert waits == sorted(waits)  # served in the order reserved


def test_tokens_come_back_with_time_up_to_the_capacity() -> None:
    bucket = TokenBucket.full(rate=10, capacity=5, now=0.0)
    assert bucket.reserve(5, 0.0) == 0.0
    assert bucket.reserve(1, 0.0) == pytest.approx(0.1)  # in debt by one
    assert bucket.reserve(1, 0.25) == pytest.approx(0.0)  # 2.5 tokens came back, 1.5 taken
    assert bucket.reserve(3, 1000.0) == 0.0  # a long quiet spell refills only to the capacity
    assert bucket.tokens == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("n", "wait"),
    [(1, 0.0), (20, 0.0), (21, 0.05), (40, 1.0), (100, 4.0)],
)
def test_a_batch_takes_one_token_per_record_even_beyond_the_burst(n: int, wait: float) -> None:
    bucket = TokenBucket.full(rate=20, capacity=20, now=0.0)
    assert bucket.reserve(n, 0.0) == pytest.approx(wait)


def test_a_batch_larger_than_the_burst_is_paid_for_before_the_next_goes() -> None:
    bucket = TokenBucket.full(rate=10, capacity=5, now=0.0)
    assert bucket.reserve(25, 0.0) == pytest.approx(2.0)  # 20 tokens short
    assert bucket.reserve(1, 0.0) == pytest.approx(2.1)  # after it, at the rate


def test_a_fractional_rate() -> None:
    bucket = TokenBucket.full(rate=0.5, capacity=1, now=0.0)
    assert bucket.reserve(1, 0.0) == 0.0
    assert bucket.reserve(1, 0.0) == pytest.approx(2.0)
    assert bucket.reserve(1, 0.0) == pytest.approx(4.0)


def test_a_clock_that_steps_back_or_stands_still_adds_nothing() -> None:
    bucket = TokenBucket.full(rate=10, capacity=1, now=50.0)
    assert bucket.reserve(1, 50.0) == 0.0
    assert bucket.reserve(1, 40.0) == pytest.approx(0.1)
    assert bucket.reserve(1, 50.0) == pytest.approx(0.2)


def test_zero_records_take_nothing() -> None:
    bucket = TokenBucket.full(rate=1, capacity=1, now=0.0)
    assert bucket.reserve(0, 0.0) == 0.0
    assert bucket.reserve(1, 0.0) == 0.0


def test_refund_gives_unused_tokens_back_up_to_the_capacity() -> None:
    bucket = TokenBucket.full(rate=10, capacity=5, now=0.0)
    bucket.reserve(5, 0.0)
    assert bucket.reserve(3, 0.0) == pytest.approx(0.3)
    bucket.refund(3, 0.0)  # that job's partition was revoked while it waited
    assert bucket.reserve(1, 0.0) == pytest.approx(0.1)
    bucket.refund(100, 10.0)
    assert bucket.tokens == 5


@pytest.mark.parametrize(
    ("rate", "capacity"),
    [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0), (1, 0.5), (1, math.inf)],
)
def test_nonsense_is_refused(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket.full(rate, capacity, 0.0)


def test_a_negative_reservation_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot reserve -1 tokens"):
        TokenBucket.full(1, 1, 0.0).reserve(-1, 0.0)
