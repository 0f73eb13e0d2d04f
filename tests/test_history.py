"""The status page's history: bounded, rates per interval, restarts and gaps handled."""

from __future__ import annotations

import pytest

from bridge.core.history import STEP_SECONDS, WINDOW_SECONDS, History


def test_empty_history_has_no_points() -> None:
    h = History()
    assert h.points() == []
    assert h.as_json()["points"] == []


def test_one_sample_has_no_interval_yet() -> None:
    h = History()
    h.add(100.0, 10, 0, 0, 3)
    assert h.points() == []


def test_rates_per_second_over_each_interval() -> None:
    h = History()
    h.add(0.0, 0, 0, 0, 0)
    h.add(5.0, 50, 5, 1, 7)
    h.add(10.0, 60, 5, 1, 2)
    p1, p2 = h.points()
    assert (p1.at, p1.records_per_s, p1.errors_per_s, p1.dead_letters_per_s, p1.lag) == (
        5.0,
        10.0,
        1.0,
        0.2,
        7,
    )
    assert (p2.records_per_s, p2.errors_per_s, p2.dead_letters_per_s, p2.lag) == (2.0, 0, 0, 2)


def test_a_counter_reset_is_a_restart_never_a_negative_rate() -> None:
    h = History()
    h.add(0.0, 1000, 10, 4, 0)
    h.add(5.0, 20, 1, 0, 0)
    (p,) = h.points()
    assert p.records_per_s == 4.0
    assert p.errors_per_s == 0.2
    assert p.dead_letters_per_s == 0.0
    assert all(v is None or v >= 0 for v in (p.records_per_s, p.errors_per_s, p.dead_letters_per_s))


def test_a_gap_leaves_the_interval_empty_but_keeps_the_lag() -> None:
    h = History()
    h.add(0.0, 0, 0, 0, 1)
    h.add(60.0, 600, 0, 0, 9)
    h.add(65.0, 610, 0, 0, 8)
    gap, after = h.points()
    assert (gap.records_per_s, gap.errors_per_s, gap.dead_letters_per_s) == (None, None, None)
    assert gap.lag == 9
    assert after.records_per_s == 2.0


def test_a_slightly_late_sample_is_not_a_gap() -> None:
    h = History()
    h.add(0.0, 0, 0, 0)
    h.add(9.0, 90, 0, 0)
    (p,) = h.points()
    assert p.records_per_s == 10.0
    assert p.lag is None


def test_samples_out_of_order_or_repeated_are_ignored() -> None:
    h = History()
    h.add(10.0, 10, 0, 0)
    h.add(10.0, 99, 0, 0)
    h.add(5.0, 99, 0, 0)
    assert len(h) == 1


def test_bounded_to_the_window_about_180_points() -> None:
    h = History()
    for i in range(2000):
        h.add(i * STEP_SECONDS, i * 10, 0, 0, i)
    assert len(h) == int(WINDOW_SECONDS / STEP_SECONDS) + 1
    points = h.points()
    assert len(points) == 180
    assert points[-1].at - points[0].at <= WINDOW_SECONDS
    assert all(p.records_per_s == 2.0 for p in points)


def test_points_older_than_the_window_before_now_are_dropped() -> None:
    h = History()
    for i in range(10):
        h.add(i * 5.0, i, 0, 0)
    assert h.points(now=45.0 + WINDOW_SECONDS) == [] or all(
        p.at >= 45.0 for p in h.points(now=45.0 + WINDOW_SECONDS)
    )
    assert [p.at for p in h.points(now=20.0 + WINDOW_SECONDS)] == [
        20.0,
        25.0,
        30.0,
        35.0,
        40.0,
        45.0,
    ]


def test_as_json_names_the_window_and_the_fields() -> None:
    h = History()
    h.add(0.0, 0, 0, 0, 0)
    h.add(5.0, 5, 0, 0, 1)
    doc = h.as_json()
    assert doc["window_seconds"] == WINDOW_SECONDS
    assert doc["step_seconds"] == STEP_SECONDS
    assert doc["points"] == [
        {"at": 5.0, "records_per_s": 1.0, "errors_per_s": 0.0, "dead_letters_per_s": 0.0, "lag": 1}
    ]


@pytest.mark.parametrize(("window", "step"), [(0, 5), (900, 0), (-1, 5)])
def test_a_nonsense_window_is_refused(window: float, step: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        History(window, step)


def test_the_sampler_reads_the_counters_metrics_export() -> None:
    from bridge.operate.metrics import Metrics
    from bridge.operate.status import HistorySampler

    m = Metrics()
    sampler = HistorySampler(m)
    sampler.sample(at=0.0)
    m.messages.labels("t", "r", "accepted").inc(50)
    m.messages.labels("t", "r", "duplicate").inc(7)
    m.messages.labels("t", "r", "dead_lettered").inc(5)
    m.ingress_errors.labels("r", "timeout").inc(10)
    m.committed_lag.labels("t", "0").set(3)
    m.committed_lag.labels("t", "1").set(4)
    sampler.sample(at=5.0)
    (p,) = sampler.history.points()
    assert (p.records_per_s, p.errors_per_s, p.dead_letters_per_s, p.lag) == (10.0, 2.0, 1.0, 7)


async def test_a_failing_sample_is_logged_and_the_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from bridge.operate.metrics import Metrics
    from bridge.operate.status import HistorySampler

    third = asyncio.Event()

    class Flaky(HistorySampler):
        calls = 0

        def sample(self, at: float | None = None) -> None:
            self.calls += 1
            if self.calls == 3:
                third.set()
            if self.calls == 1:
                raise RuntimeError("a collector broke")
            super().sample(at)

    history = History(window=1.0, step=0.01)
    sampler = Flaky(Metrics(), history)
    assert sampler.history is history  # empty, so falsy: kept all the same
    task = asyncio.create_task(sampler.run())
    await asyncio.wait_for(third.wait(), 10)  # a sampler that ended at the failure times out
    assert not task.done()  # still sampling
    task.cancel()
    assert "a sample failed" in caplog.text
    assert "a collector broke" in caplog.text
