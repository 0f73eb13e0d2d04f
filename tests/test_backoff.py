"""bridge.core.backoff: exponential growth, cap, jitter in the upper half, Retry-After."""

from __future__ import annotations

import math
import random

import pytest

from bridge.core.backoff import Backoff


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0), (8, 10.0), (1000, 10.0)],
)
def test_growth_and_cap(attempt: int, ceiling: float) -> None:
    backoff = Backoff(initial=0.1, maximum=10.0)
    assert backoff.delay(attempt, rng=FixedRandom(0.0)) == pytest.approx(ceiling / 2)
    assert backoff.delay(attempt, rng=FixedRandom(1.0)) == pytest.approx(ceiling)
    assert backoff.delay(attempt, rng=FixedRandom(0.5)) == pytest.approx(ceiling * 0.75)


def test_defaults() -> None:
    assert Backoff() == Backoff(initial=0.1, maximum=10.0)


@pytest.mark.parametrize("attempt", [0, 1, 3, 5, 10, 40])
def test_jitter_stays_between_half_and_full_ceiling(attempt: int) -> None:
    backoff = Backoff(initial=0.25, maximum=5.0)
    ceiling = min(5.0, 0.25 * 2**attempt)
    rng = random.Random(attempt)
    delays = [backoff.delay(attempt, rng=rng) for _ in range(500)]
    assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling * 0.3  # it does jitter


def test_default_rng_is_used_without_one() -> None:
    for _ in range(100):
        assert 0.05 <= Backoff().delay(0) <= 0.1


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 0.2), (0.0, 0.2), (0.1, 0.2), (3.0, 3.0), (9.5, 9.5), (10.0, 10.0)],
)
def test_retry_after_is_a_floor(retry_after: float | None, expected: float) -> None:
    delay = Backoff(initial=0.1, maximum=10.0).delay(1, retry_after, rng=FixedRandom(1.0))
    assert delay == pytest.approx(expected)
    assert isinstance(delay, float)


@pytest.mark.parametrize("retry_after", [10.001, 30.0, 1e12, 1e308, math.inf])
def test_retry_after_beyond_the_cap_waits_the_cap(retry_after: float) -> None:
    # a proxy asking for a year (or forever) must not stop a key for longer than retry_max
    assert Backoff(initial=0.1, maximum=10.0).delay(0, retry_after) == 10.0


def test_nan_retry_after_is_ignored() -> None:
    delay = Backoff(initial=0.1, maximum=10.0).delay(1, math.nan, rng=FixedRandom(1.0))
    assert delay == pytest.approx(0.2)


def test_negative_attempt_is_the_first() -> None:
    assert Backoff(0.1, 10.0).delay(-5, rng=FixedRandom(1.0)) == pytest.approx(0.1)
