"""The status page's last 15 minutes: a bounded ring of samples of the bridge's counters
(accepted records, errors, dead letters) and one gauge (committed lag summed over partitions),
turned into per-interval rates. Pure: the caller supplies the timestamps.

A counter lower than its last value means the process (or its metrics) restarted: that interval
counts the new value as its increase, never a negative rate. An interval longer than twice the
sampling step is a gap: its rates are ``None`` (the chart breaks the line there)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_SECONDS = 15 * 60.0
STEP_SECONDS = 5.0


@dataclass(frozen=True)
class Sample:
    at: float
    records: float
    errors: float
    dead_letters: float
    lag: float | None


@dataclass(frozen=True)
class Point:
    """One interval ending at ``at``: rates per second over it, and the lag sampled at its end."""

    at: float
    records_per_s: float | None
    errors_per_s: float | None
    dead_letters_per_s: float | None
    lag: float | None

    def as_json(self) -> dict[str, float | None]:
        return {
            "at": self.at,
            "records_per_s": self.records_per_s,
            "errors_per_s": self.errors_per_s,
            "dead_letters_per_s": self.dead_letters_per_s,
            "lag": self.lag,
        }


def _increase(previous: float, current: float) -> float:
    """A counter's increase; a drop is a restart, counted from zero."""
    return current - previous if current >= previous else current


class History:
    """At most ``window / step + 1`` samples; older ones fall out."""

    def __init__(self, window: float = WINDOW_SECONDS, step: float = STEP_SECONDS) -> None:
        if window <= 0 or step <= 0:
            raise ValueError("window and step must be positive")
        self.window = window
        self.step = step
        self._samples: deque[Sample] = deque(maxlen=int(window // step) + 1)

    def __len__(self) -> int:
        return len(self._samples)

    def add(
        self,
        at: float,
        records: float,
        errors: float,
        dead_letters: float,
        lag: float | None = None,
    ) -> None:
        """Record a sample; one not later than the last is ignored (a clock step back)."""
        if self._samples and at <= self._samples[-1].at:
            return
        self._samples.append(Sample(at, records, errors, dead_letters, lag))

    def points(self, now: float | None = None) -> list[Point]:
        """The intervals within the window ending at ``now`` (default: the last sample)."""
        if not self._samples:
            return []
        end = self._samples[-1].at if now is None else now
        start = end - self.window
        out: list[Point] = []
        previous: Sample | None = None
        for sample in self._samples:
            if previous is not None and sample.at >= start:
                out.append(self._point(previous, sample))
            previous = sample
        return out

    def _point(self, before: Sample, after: Sample) -> Point:
        elapsed = after.at - before.at
        if elapsed > 2 * self.step:
            return Point(after.at, None, None, None, after.lag)
        return Point(
            after.at,
            _increase(before.records, after.records) / elapsed,
            _increase(before.errors, after.errors) / elapsed,
            _increase(before.dead_letters, after.dead_letters) / elapsed,
            after.lag,
        )

    def as_json(self, now: float | None = None) -> dict[str, object]:
        return {
            "window_seconds": self.window,
            "step_seconds": self.step,
            "points": [p.as_json() for p in self.points(now)],
        }
