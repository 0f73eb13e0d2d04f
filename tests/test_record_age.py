"""Old records: ``max_record_age`` dead-letters or holds them instead of sending, and a record
older than Restate remembers its target's idempotency keys is counted (the Kafka side, with a
fake delivery; the hold and the operator's release run through the real dispatcher in
tests/test_record_age_stack.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bridge.consume.book import PartitionBook
from bridge.consume.intake import Deployed, Intake
from bridge.consume.routes import RoutesInForce
from bridge.core.controls import Controls
from bridge.core.offsets import TopicPartition
from bridge.core.routing import Invocation, Poison
from bridge.operate.metrics import Metrics
from bridge.operate.status import RecentDeadLetters
from bridge.sinks.parking import Parking
from tests.test_worker import Clock, FakeConsumer, FakeDelivery, config

TP = TopicPartition("orders", 0)
NOW = 1_800_000_000.0
HOUR = 3600.0


class Windows:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def dedup_window(self, route: str) -> float | None:
        return self.seconds

    def input_check(self, route: str) -> None:
        return None


async def _none() -> Any:
    raise AssertionError("nothing is parked here")


class Side:
    def __init__(self, route_lines: str = "", registry: Deployed | None = None) -> None:
        self.metrics = Metrics()
        self.delivery = FakeDelivery()
        book = PartitionBook(self.metrics, RecentDeadLetters(), Clock())
        book.assign({TP})
        self.intake = Intake(
            routes=RoutesInForce(config(more_routes=route_lines), self.metrics),
            book=book,
            delivery=self.delivery,
            controls=Controls(),
            parking=Parking(_none, _none),
            metrics=self.metrics,
            windows=registry,
            wall_clock=lambda: NOW,
        )

    def take(self, offset: int, written_ago: float | None) -> Invocation | Poison:
        timestamp = -1 if written_ago is None else int((NOW - written_ago) * 1000)
        record = SimpleNamespace(
            topic=TP.topic,
            partition=TP.partition,
            offset=offset,
            timestamp=timestamp,
            key=b"k",
            value=b"{}",
            headers=(),
        )
        self.intake.take(FakeConsumer(), TP, [record])
        return self.delivery.jobs[-1][1]

    def past_window(self) -> float | None:
        return self.metrics.registry.get_sample_value(
            "restate_bridge_records_past_dedup_window_total", {"route": "rec"}
        )


def test_without_a_limit_any_age_is_sent() -> None:
    side = Side()
    assert isinstance(side.take(0, 400 * 86400.0), Invocation)
    assert isinstance(side.take(1, None), Invocation)


def test_a_record_older_than_max_record_age_is_dead_lettered_with_its_age() -> None:
    side = Side('max_record_age = "20h"\n')
    assert isinstance(side.take(0, 19 * HOUR), Invocation)
    assert isinstance(side.take(1, 20 * HOUR), Invocation)  # not older than the limit
    poison = side.take(2, 30 * HOUR)
    assert poison == Poison("rec", "older than max_record_age (20h): written 1.2d ago")
    assert isinstance(side.take(3, None), Invocation)  # no timestamp: no age


def test_with_block_the_planned_invocation_is_held_for_the_operator() -> None:
    side = Side('max_record_age = "1h"\non_record_too_old = "block"\n')
    poison = side.take(0, 2 * HOUR)
    assert isinstance(poison, Poison)
    assert isinstance(poison.held, Invocation)
    assert poison.held.idempotency_key == "orders-0-0:rec"
    assert poison.reason == "older than max_record_age (1h): written 2.0h ago"


def test_records_past_restates_dedup_window_are_counted_and_still_sent() -> None:
    side = Side(registry=Windows(86400.0))
    assert side.past_window() == 0
    assert isinstance(side.take(0, 23 * HOUR), Invocation)
    assert side.past_window() == 0
    assert isinstance(side.take(1, 25 * HOUR), Invocation)
    assert side.past_window() == 1
    unknown = Side(registry=Windows(None))
    unknown.take(0, 400 * 86400.0)
    assert unknown.past_window() == 0
