"""Exponential backoff with jitter, honouring a server's Retry-After up to the cap. Pure."""

from __future__ import annotations

import math
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
        of ``initial * 2**attempt`` (capped), at least ``retry_after``, and never more than
        ``maximum`` whatever ``retry_after`` says (infinite, NaN, a year away)."""
        ceiling = min(self.maximum, self.initial * (2 ** min(max(attempt, 0), 32)))
        delay = ceiling * (0.5 + 0.5 * (rng or random).random())
        if retry_after is not None and not math.isnan(retry_after):
            delay = max(delay, retry_after)
        return float(min(delay, self.maximum))
