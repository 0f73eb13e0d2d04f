"""Exponential backoff with jitter, honouring a server's Retry-After. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 10.0

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): full jitter in the upper half
        of ``initial * 2**attempt`` (capped), and never less than ``retry_after``."""
        ceiling = min(self.maximum, self.initial * (2 ** min(attempt, 32)))
        jittered = ceiling * (0.5 + 0.5 * (rng or random).random())
        return float(max(jittered, retry_after or 0.0))
