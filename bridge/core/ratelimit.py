"""A route's rate limit: a token bucket in records per second. Pure: no asyncio, no clock reads.

The bucket holds up to ``capacity`` tokens (the burst) and gains ``rate`` tokens a second. A send
of ``n`` records *reserves* ``n`` tokens at once and is told how long to wait for them, so
reservations are served in the order they were made and the balance may go below zero: a
batch larger than the burst is not refused, it waits until the rate has paid for it. Over any
window of ``t`` seconds at most ``capacity + rate * t`` records go out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def default_burst(rate: float) -> float:
    """One second's worth of records, at least one."""
    return max(1.0, rate)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up; starts full at ``now``."""

    rate: float
    capacity: float
    tokens: float
    updated: float
    """The monotonic time ``tokens`` was last brought up to date."""

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of records per second, not {rate}")
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ValueError(f"capacity must be at least 1 record, not {capacity}")
        return cls(rate, capacity, capacity, now)

    def _refill(self, now: float) -> None:
        if now > self.updated:  # a clock that stands still or steps back adds nothing
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` tokens at ``now``; the seconds to wait before sending (0: at once)."""
        if n < 0:
            raise ValueError(f"cannot reserve {n} tokens")
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def refund(self, n: int, now: float) -> None:
        """Give back ``n`` tokens a reservation took but did not use (its partition was revoked
        while it waited), so the records after it do not wait for nothing."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + n)
