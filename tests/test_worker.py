"""The Kafka side in-process: the real partition book, flow control, intake, commits and
operator, with a fake consumer and a fake delivery passed in by their constructors.

What the loop does with one partition's records (the per-partition bound, offsets that go back,
records that break routing), what the rebalance callbacks keep (blocked partitions), what the
periodic gauges say (their values), and that a failing commit does not end the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError, KafkaError

from bridge.config import BridgeConfig, parse_config
from bridge.consume.book import PartitionBook
from bridge.consume.loop import KafkaSide
from bridge.consume.routes import RoutesInForce
from bridge.core.controls import (
    BadRequest,
    Blocked,
    Controls,
    NotBlocked,
    ReleaseRetry,
    ReleaseSkip,
    UnknownName,
)
from bridge.core.offsets import TopicPartition
from bridge.core.record import Record
from bridge.core.routing import Invocation, Poison, Skip
from bridge.deliver.health import IngressHealth
from bridge.deliver.holds import Held, Hold
from bridge.deliver.lease import PendingRecord
from bridge.operate.metrics import Metrics
from bridge.operate.operator import Operator
from bridge.operate.status import RecentDeadLetters, snapshot
from bridge.sinks.deadletter import DeadLetter
from bridge.sinks.parking import Parking
from bridge.worker import Bridge

A = TopicPartition("orders", 0)
B = TopicPartition("orders", 1)


def config(delivery: str = "", more_routes: str = "") -> BridgeConfig:
    text = f"""
[kafka]
bootstrap_servers = "127.0.0.1:9"
[metrics]
listen = "127.0.0.1:0"
[delivery]
{delivery}
[[routes]]
name = "rec"
topic = "orders"
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
{more_routes}
"""
    return parse_config(text, Path("routes.toml"), {})


class FakeConsumer:
    """What the Kafka side asks of the consumer (:class:`ConsumerPort`), recorded."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.highwaters: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.commit_error: BaseException | None = None
        self.while_positioning: Any = None
        self.while_committing: Callable[[dict[TopicPartition, int]], Awaitable[None]] | None = None

    def subscribe(self, config: BridgeConfig, listener: Any) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        return {}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned, "Partition is not assigned"  # as aiokafka does
        return self.highwaters.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        if self.while_positioning is not None:
            await self.while_positioning(tp)
        if tp not in self.assigned:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return self.positions.get(tp, 0)

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        if self.while_committing is not None:
            await self.while_committing(positions)
            return
        self.commits.append(dict(positions))


class FakeDelivery:
    """What the Kafka side asks of delivery (:class:`bridge.deliver.ports.Delivery`)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[PendingRecord, Invocation | Poison]] = []
        self.fail: Exception | None = None
        self.skips: list[tuple[PendingRecord, str, Callable[[], Awaitable[None]]]] = []
        self.pause_changes = 0
        self.settled = False
        """Every job waits for the operator: a drain has nothing to wait for."""
        self.held: set[TopicPartition] = set()
        """Partitions whose jobs wait for the operator (blocked)."""
        self.missing_reply_topics: dict[str, int] = {}

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        if self.fail is not None:
            raise self.fail
        self.jobs.append((pending, item))

    def submit_skip(
        self, pending: PendingRecord, route: str, park: Callable[[], Awaitable[None]]
    ) -> None:
        self.skips.append((pending, route, park))

    def flush(self, routes: Iterable[str] | None = None) -> None:
        pass

    def unsettled(self, tps: set[TopicPartition]) -> int:
        if self.settled:
            return 0
        return sum(1 for pending, _ in self.jobs if pending.tp in tps - self.held)

    def configure_routes(self, routes: Any) -> None:
        pass

    def pauses_changed(self) -> None:
        self.pause_changes += 1

    async def aclose(self) -> None:
        pass


async def _no_producer() -> Any:
    raise AssertionError("no producer in these tests")


async def _no_topics() -> set[str]:
    return set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """The Kafka side wired to the fakes (passed in by constructor), owning ``assigned``."""

    def __init__(
        self,
        delivery: str = "",
        assigned: Iterable[TopicPartition] = (A, B),
        more_routes: str = "",
        *,
        consumer: FakeConsumer | None = None,
        dispatcher: FakeDelivery | None = None,
        running: BridgeConfig | None = None,
    ) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.routes = RoutesInForce(running or config(delivery, more_routes), self.metrics)
        self.dead_letters = RecentDeadLetters()
        self.book = PartitionBook(self.metrics, self.dead_letters, self.clock)
        self.controls = Controls()
        self.consumer = consumer or FakeConsumer()
        self.dispatcher = dispatcher or FakeDelivery()
        parking = Parking(_no_producer, _no_topics)
        health = IngressHealth(self.metrics)
        health.mark_up()
        self.kafka = KafkaSide(
            consumer=self.consumer,
            book=self.book,
            delivery=self.dispatcher,
            routes=self.routes,
            controls=self.controls,
            parking=parking,
            metrics=self.metrics,
            health=health,
            clock=self.clock,
        )
        self.operator = Operator(
            controls=self.controls,
            book=self.book,
            routes=self.routes,
            parking=parking,
            metrics=self.metrics,
            pauses_changed=self.dispatcher.pauses_changed,
        )
        self.assign(*assigned)

    def assign(self, *tps: TopicPartition) -> None:
        self.consumer.assigned = set(tps)
        self.consumer.paused = set()  # a new assignment starts unpaused, as in aiokafka
        self.kafka.assigned(set(tps))

    async def revoke(self, *tps: TopicPartition) -> None:
        await self.kafka.revoked(set(tps))
        self.consumer.assigned -= set(tps)

    def take(self, tp: TopicPartition, *offsets: int) -> None:
        self.kafka.intake.take(self.consumer, tp, [msg(tp, o) for o in offsets])
        self.kafka.flow.apply(True)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        for pending, _ in self.dispatcher.jobs:
            if pending.tp == tp and pending.record.offset == offset:
                self.book.finished(pending)
                return
        raise AssertionError(f"{tp}@{offset} was never submitted")

    def gauge(self, name: str, tp: TopicPartition) -> float | None:
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        return self.metrics.registry.get_sample_value(name, labels)

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def block(self, tp: TopicPartition, offset: int, route: str, reason: str) -> None:
        """Block ``tp`` at ``offset`` with no job held there (as once its job is gone)."""
        self.book.block_without_job(Blocked(tp, offset, route, reason))
        self.dispatcher.held.add(tp)  # its jobs wait for the operator: a drain does not


def msg(tp: TopicPartition, offset: int, key: bytes | None = b"k", value: bytes = b"{}") -> Any:
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0,
        key=key,
        value=value,
        headers=(),
    )


def submitted(world: World, tp: TopicPartition) -> list[int]:
    return [p.record.offset for p, _ in world.dispatcher.jobs if p.tp == tp]


# -- the per-partition bound ---------------------------------------------------------------------


def test_a_partition_pauses_alone_at_max_pending_per_partition_and_resumes_below_it() -> None:
    w = World("max_pending_per_partition = 3")
    w.take(A, 0, 1, 2, 3, 4)
    assert submitted(w, A) == [0, 1, 2]
    assert w.consumer.seeks == [(A, 3)]  # offsets 3 and 4 stay in Kafka, fetched again later
    assert w.consumer.paused == {A}
    w.take(B, 0, 1)  # the other partition keeps flowing
    assert submitted(w, B) == [0, 1]
    assert w.consumer.paused == {A}
    w.finish(A, 1)
    w.finish(A, 2)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A}, "finished behind an unfinished head still count"
    w.finish(A, 0)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == set()
    w.take(A, 3, 4)
    assert submitted(w, A) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(20))
def test_the_per_partition_bound_holds_whatever_the_fetches_and_finishes(seed: int) -> None:
    rng = random.Random(seed)
    bound = rng.randrange(1, 12)
    w = World(f"max_pending_per_partition = {bound}")
    next_offset = {A: 0, B: 0}
    done: set[int] = set()
    for _ in range(200):
        tp = rng.choice((A, B))
        if tp not in w.consumer.paused and rng.random() < 0.6:
            start = next_offset[tp]
            w.take(tp, *range(start, start + rng.randrange(1, 2 * bound + 2)))
            taken = submitted(w, tp)
            next_offset[tp] = (taken[-1] + 1) if taken else start
            for seek_tp, offset in w.consumer.seeks:
                assert seek_tp != tp or offset == next_offset[tp]
            w.consumer.seeks.clear()
        else:
            candidates = [p for p, _ in w.dispatcher.jobs if p.tp == tp and id(p) not in done]
            if candidates:
                chosen = rng.choice(candidates)
                done.add(id(chosen))
                w.book.finished(chosen)
            w.kafka.flow.apply(True)
        for each in (A, B):
            held = w.book.tracker.uncommittable(each)
            assert held <= bound, (each, held, bound)
            assert (each in w.consumer.paused) == (held >= bound)


# -- records that must not stop the loop ---------------------------------------------------------


def test_a_record_that_breaks_routing_is_dead_lettered_with_its_coordinates(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World()

    def explode(record: Record) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(w.routes.router, "plan", explode)
    with caplog.at_level(logging.ERROR, logger="bridge.worker"):
        w.take(A, 5)
    [(pending, item)] = w.dispatcher.jobs
    assert item == Poison("", "internal error while routing: RuntimeError: boom")
    assert (pending.tp, pending.record.offset, pending.remaining) == (A, 5, 1)
    assert "orders-0@5: internal error while routing" in caplog.text
    assert "RuntimeError: boom" in caplog.text  # the traceback is logged


def test_a_failing_submit_blocks_the_partition_visibly(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    w.dispatcher.fail = RuntimeError("lane bug")
    with caplog.at_level(logging.ERROR, logger="bridge.worker"):
        w.take(A, 7)
    assert "orders-0@7: internal error while submitting" in caplog.text
    blocked = w.book.all_blocked()[A]
    assert (blocked.offset, blocked.route) == (7, "")
    assert "lane bug" in blocked.reason
    assert w.gauge("restate_bridge_partition_blocked", A) == 1
    assert w.consumer.paused == {A}
    assert w.book.tracker.to_commit() == {}  # nothing past it is committed


def test_skipped_records_are_counted_and_finish_without_a_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    plans: list[list[Any]] = [[Skip("rec")], [Skip("rec"), Poison("rec", "bad")], []]
    monkeypatch.setattr(w.routes.router, "plan", lambda record: plans.pop(0))
    w.take(A, 0, 1, 2)
    skipped = w.counter(
        "restate_bridge_messages_total", topic="orders", route="rec", outcome="skipped"
    )
    assert skipped == 2
    assert (
        w.counter("restate_bridge_messages_total", topic="orders", route="", outcome="unrouted")
        == 1
    )
    [(pending, item)] = w.dispatcher.jobs  # only the poison is submitted
    assert (pending.record.offset, pending.remaining, item) == (1, 1, Poison("rec", "bad"))
    # offset 0 (all skipped) finished at once; 1 waits for its dead letter; 2 (unrouted) is done
    assert w.book.tracker.to_commit() == {A: 1}
    w.finish(A, 1)
    assert w.book.tracker.to_commit() == {A: 3}


def test_an_offset_that_goes_backwards_restarts_the_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World()
    w.take(A, 10, 11)
    w.finish(A, 10)
    with caplog.at_level(logging.WARNING, logger="bridge.worker"):
        w.take(A, 4, 5)  # the log was truncated, or the group's offset reset
    assert "orders-0@4: offset 4 fetched after 11" in caplog.text
    assert "went backwards" in caplog.text
    assert submitted(w, A) == [10, 11, 4, 5]
    assert w.book.tracker.in_progress == 2  # 11 is forgotten; 4 and 5 are tracked
    w.finish(A, 11)  # the old record's late finish changes nothing
    assert w.book.tracker.to_commit() == {}
    w.finish(A, 4)
    assert w.book.tracker.to_commit() == {A: 5}


# -- blocked partitions across rebalances --------------------------------------------------------


async def test_records_fetched_while_a_revocation_commits_are_left_to_the_next_owner() -> None:
    """The consume loop goes on while the revoke callback awaits its drain and commit: a record
    of a revoked partition taken then would be sent after the commit, and sent again by the next
    owner. It is neither tracked nor submitted, and the partition stops fetching at once."""
    w = World()
    w.take(A, 0)
    w.finish(A, 0)
    fetched_meanwhile: list[int] = []

    async def commit(positions: dict[TopicPartition, int]) -> None:
        w.take(A, 1, 2)  # a getmany that returned while the callback awaited the commit
        fetched_meanwhile.extend(submitted(w, A))
        w.consumer.commits.append(dict(positions))

    w.consumer.while_committing = commit
    await w.kafka.revoked({A})
    assert w.consumer.commits == [{A: 1}]
    assert fetched_meanwhile == [0], "records of a partition under revocation were submitted"
    assert A in w.consumer.paused
    assert w.book.tracker.partition(A) is None


async def test_a_blocked_partition_stays_blocked_when_a_rebalance_gives_it_back() -> None:
    w = World()
    w.take(A, 0, 1)
    w.finish(A, 0)
    w.block(A, 1, "rec", "not JSON")
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A}
    assert w.gauge("restate_bridge_partition_blocked", A) == 1

    await w.revoke(A, B)
    assert w.consumer.commits == [{A: 1}]  # what finished before the block is committed
    assert w.gauge("restate_bridge_partition_blocked", A) is None  # not owned: no series
    assert A in w.book.all_blocked()

    w.assign(B)  # owned elsewhere for a while: still no series here
    assert w.gauge("restate_bridge_partition_blocked", A) is None
    await w.revoke(B)

    w.assign(A, B)
    assert w.consumer.paused == {A}, "paused before anything is fetched"
    assert w.gauge("restate_bridge_partition_blocked", A) == 1
    assert w.book.all_blocked()[A] == Blocked(A, 1, "rec", "not JSON")
    w.take(A, 1, 2)  # fetched before the pause took effect: left in Kafka
    assert submitted(w, A) == [0, 1]
    assert w.consumer.seeks[-1] == (A, 1)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A}


def test_status_json_names_the_blocked_partitions_reason() -> None:
    w = World()
    w.block(A, 15, "rec", "value is not JSON")
    w.book.dead_lettered(DeadLetter(Record("orders", 1, 3, 0, None, b"x"), "rec", "bad"))
    status = snapshot(
        w.routes.config, w.metrics, w.dead_letters, (True, "ok"), w.book.all_blocked()
    )
    [row] = [p for p in status["partitions"] if p["partition"] == 0]
    want = (1.0, 15, "rec", "value is not JSON")
    assert (row["blocked"], row["blocked_at"], row["blocked_route"], row["blocked_reason"]) == want
    [letter] = status["dead_letters"]
    assert (letter["partition"], letter["offset"], letter["reason"]) == (1, 3, "bad")


# -- the per-partition gauges --------------------------------------------------------------------


async def test_partition_gauges_have_the_right_values() -> None:
    w = World()
    c = w.consumer
    w.take(A, 100, 101, 102)  # the group had committed 100: fetching starts there
    c.highwaters = {A: 150, B: 40}
    c.positions = {A: 103, B: 40}
    w.clock.now += 7.5
    await w.kafka.committer.update_gauges()
    assert w.gauge("restate_bridge_consumer_lag", A) == 47  # 150 - 103
    assert w.gauge("restate_bridge_committed_lag", A) == 50  # 150 - 100, before any commit
    assert w.gauge("restate_bridge_oldest_unfinished_age_seconds", A) == 7.5
    assert w.gauge("restate_bridge_consumer_lag", B) == 0
    assert w.gauge("restate_bridge_committed_lag", B) == 0  # nothing fetched: the position
    assert w.gauge("restate_bridge_oldest_unfinished_age_seconds", B) == 0

    w.finish(A, 100)
    w.finish(A, 102)
    await w.kafka.committer.commit()
    assert c.commits == [{A: 101}]
    w.clock.now += 2.5
    await w.kafka.committer.update_gauges()
    assert w.gauge("restate_bridge_committed_lag", A) == 49  # 150 - 101
    assert (
        w.gauge("restate_bridge_oldest_unfinished_age_seconds", A) == 10.0
    )  # 101, fetched 10s ago
    w.finish(A, 101)
    await w.kafka.committer.update_gauges()
    assert w.gauge("restate_bridge_oldest_unfinished_age_seconds", A) == 0

    # a blocked partition's age keeps growing, also after a rebalance gave it back
    w.take(A, 103)
    w.clock.now += 5
    w.block(A, 103, "rec", "bad")
    await w.revoke(A, B)
    for gauge in ("consumer_lag", "committed_lag", "oldest_unfinished_age_seconds"):
        assert w.gauge(f"restate_bridge_{gauge}", A) is None
    w.assign(A)
    w.clock.now += 60
    c.highwaters = {}  # paused since the assignment: nothing fetched, no high watermark
    await w.kafka.committer.update_gauges()
    assert w.gauge("restate_bridge_oldest_unfinished_age_seconds", A) == 65
    assert w.gauge("restate_bridge_consumer_lag", A) is None


async def test_a_rebalance_during_the_gauge_update_does_not_crash_or_leave_series() -> None:
    w = World()
    c = w.consumer
    c.highwaters = {A: 10, B: 10}
    c.positions = {A: 5, B: 5}

    async def revoke_everything(tp: TopicPartition) -> None:
        c.while_positioning = None
        await w.revoke(A, B)  # runs in the coordinator's task while the loop awaits position()

    c.while_positioning = revoke_everything
    await w.kafka.committer.update_gauges()
    for tp in (A, B):
        for gauge in ("consumer_lag", "committed_lag", "oldest_unfinished_age_seconds"):
            assert w.gauge(f"restate_bridge_{gauge}", tp) is None, (gauge, tp)

    # aiokafka already dropped a partition the callbacks still hold: skipped, no assertion error
    w.assign(A, B)
    c.assigned = {B}
    c.highwaters = {B: 10}
    await w.kafka.committer.update_gauges()
    assert w.gauge("restate_bridge_consumer_lag", B) == 5
    assert w.gauge("restate_bridge_consumer_lag", A) is None


# -- commits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KafkaError("coordinator moved"), RuntimeError("bug")])
async def test_a_failing_commit_is_counted_and_retried_next_time(error: Exception) -> None:
    w = World()
    c = w.consumer
    w.take(A, 0)
    w.finish(A, 0)
    c.commit_error = error
    await w.kafka.committer.commit()
    assert w.counter("restate_bridge_commits_total", result="failed") == 1
    assert w.gauge("restate_bridge_committed_offset", A) is None
    c.commit_error = None
    await w.kafka.committer.commit()
    assert c.commits == [{A: 1}]
    assert w.counter("restate_bridge_commits_total", result="ok") == 1
    assert w.gauge("restate_bridge_committed_offset", A) == 1


async def test_a_cancelled_commit_is_not_swallowed() -> None:
    w = World()
    w.take(A, 0)
    w.finish(A, 0)
    w.consumer.commit_error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await w.kafka.committer.commit()


def test_the_token_comes_from_the_config() -> None:
    cfg = config()
    from dataclasses import replace

    with_token = replace(cfg, restate=replace(cfg.restate, token="s3cr3t"))
    assert Bridge(with_token).token == "s3cr3t"
    assert Bridge(with_token, token="override").token == "override"
    assert "s3cr3t" not in repr(with_token)


# -- the operator's controls ---------------------------------------------------------------------

AUDIT = """
[[routes]]
name = "audit"
topics = ["orders", "payments"]
target = "service"
service = "Audit"
handler = "log"
"""
P = TopicPartition("payments", 0)


def test_pausing_the_only_route_of_a_topic_stops_fetching_it_and_resume_fetches_again() -> None:
    w = World()
    answer = w.operator.pause("route", "rec", True)
    assert answer == {
        "route": "rec",
        "paused": True,
        "changed": True,
        "paused_partitions": [
            {"topic": "orders", "partition": 0},
            {"topic": "orders", "partition": 1},
        ],
    }
    assert (w.controls.paused_routes, w.controls.paused_topics) == ({"rec"}, set())
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A, B}
    assert w.gauge("restate_bridge_partition_paused", A) == 1
    assert w.counter("restate_bridge_route_paused", route="rec") == 1
    w.take(A, 0, 1)  # fetched before the pause took effect: left in Kafka
    assert submitted(w, A) == []
    assert w.consumer.seeks == [(A, 0)]
    assert w.operator.pause("route", "rec", True)["changed"] is False  # twice is fine

    w.operator.pause("route", "rec", False)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == set()
    assert w.gauge("restate_bridge_partition_paused", A) == 0
    assert w.counter("restate_bridge_route_paused", route="rec") == 0
    assert (w.controls.paused_routes, w.controls.paused_topics) == (set(), set())


def test_a_partition_another_route_reads_keeps_being_fetched() -> None:
    w = World(more_routes=AUDIT, assigned=(A, P))
    w.operator.pause("route", "audit", True)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {P}  # orders is read by rec too: fetched, audit's jobs wait
    w.take(A, 0)
    assert submitted(w, A) == [0, 0]  # one invocation per route; the dispatcher holds audit's
    w.operator.pause("route", "rec", True)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A, P}


def test_pausing_a_topic_stops_it_whoever_reads_it() -> None:
    w = World(more_routes=AUDIT, assigned=(A, B, P))
    w.operator.pause("topic", "payments", True)
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {P}
    assert (w.controls.paused_routes, w.controls.paused_topics) == (set(), {"payments"})
    assert w.counter("restate_bridge_topic_paused", topic="payments") == 1
    assert w.counter("restate_bridge_topic_paused", topic="orders") == 0


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    w = World(more_routes=AUDIT)
    with pytest.raises(UnknownName, match="no route named 'nope'; known routes: rec, audit"):
        w.operator.pause("route", "nope", True)
    with pytest.raises(UnknownName, match="known topics: orders, payments"):
        w.operator.pause("topic", "nope", True)
    assert w.controls.paused_routes == set()


async def test_a_pause_holds_across_a_rebalance_before_anything_is_fetched() -> None:
    w = World()
    w.operator.pause("route", "rec", True)
    await w.revoke(A, B)
    assert w.gauge("restate_bridge_partition_paused", A) is None  # not owned: no series
    w.assign(A, B, TopicPartition("orders", 2))
    assert w.consumer.paused == {A, B, TopicPartition("orders", 2)}, "paused on assignment"
    assert w.gauge("restate_bridge_partition_paused", A) == 1
    view = w.operator.controls_view()
    assert view["paused_routes"] == ["rec"]
    assert len(view["paused_partitions"]) == 3


async def test_a_drain_does_not_wait_for_records_held_by_a_pause() -> None:
    w = World()
    w.take(A, 0, 1)
    w.dispatcher.settled = True
    await asyncio.wait_for(w.revoke(A), 1.0)  # drain_timeout is 30 s
    assert w.consumer.commits == []


async def test_a_release_of_a_held_job_retries_or_skips_and_unblocks() -> None:
    w = World()
    w.take(A, 0, 1)
    pending = w.dispatcher.jobs[1][0]
    hold = Hold(Held((pending.record,), "rec", "ingress answered 400"), pending.lease)
    w.book.held(hold)  # what delivery reports when the job blocks
    assert w.book.all_blocked() == {A: Blocked(A, 1, "rec", "ingress answered 400")}
    with pytest.raises(NotBlocked, match="partition orders-1 is not blocked"):
        await w.operator.release(B, ReleaseRetry())
    with pytest.raises(BadRequest, match="read by route rec"):
        await w.operator.release(A, ReleaseSkip("bad", "orders"))

    answer = await w.operator.release(A, ReleaseSkip("bad data"))
    assert answer == {
        "topic": "orders",
        "partition": 0,
        "offset": 1,
        "route": "rec",
        "action": "skip",
        "to": None,
        "refetch": False,
        "still_blocked": False,
    }
    assert await hold.wait() == "skip"
    w.book.hold_ended(hold)  # the job finished its record as skipped
    assert w.book.all_blocked() == {}
    assert w.gauge("restate_bridge_partition_blocked", A) == 0
    assert w.counter("restate_bridge_releases_total", action="skip") == 1
    assert w.counter("restate_bridge_releases_total", action="retry") == 0
    [note] = w.operator.controls_view()["releases"]
    assert (note["offset"], note["action"], note["reason"]) == (1, "skip", "bad data")


async def test_a_release_after_the_job_is_gone_fetches_the_partition_again() -> None:
    w = World()
    w.take(A, 0, 1, 2)
    w.finish(A, 0)
    w.block(A, 1, "rec", "not JSON")
    await w.revoke(A, B)
    w.assign(A, B)
    assert w.consumer.paused == {A}
    [row] = w.operator.controls_view()["blocked"]
    assert row["owned"] is True

    answer = await w.operator.release(A, ReleaseSkip("poison, fixed upstream"))
    assert answer["refetch"] is True
    assert w.book.all_blocked() == {}
    w.kafka.flow.apply(True)
    assert w.consumer.paused == set(), "fetched again from the committed offset"
    assert w.operator.controls_view()["pending_skips"][0]["offset"] == 1

    w.take(A, 1, 2)  # read again: 1 is skipped as ordered, 2 goes as usual
    [(pending, route, _)] = w.dispatcher.skips
    assert (pending.record.offset, route) == (1, "rec")
    assert submitted(w, A)[-1] == 2
    assert w.operator.controls_view()["pending_skips"] == []

    w.block(B, 4, "rec", "not JSON")
    await w.revoke(B)  # released while owned elsewhere: forgotten here
    answer = await w.operator.release(B, ReleaseRetry())
    assert answer["refetch"] is True
    assert B not in w.book.all_blocked()


# -- one owner: the partition book --------------------------------------------------------------

RENAMED = """
[kafka]
bootstrap_servers = "127.0.0.1:9"
[metrics]
listen = "127.0.0.1:0"
[[routes]]
name = "renamed"
topic = "orders"
target = "object"
service = "Recorder"
handler = "record"
key = "{key}"
"""


async def test_the_book_is_the_one_source_of_a_partitions_block() -> None:
    """Held, then revoked (remembered), then released: every view reads the same state."""
    w = World()
    w.take(A, 0)
    pending = w.dispatcher.jobs[0][0]
    hold = Hold(Held((pending.record,), "rec", "bad"), pending.lease)
    w.book.held(hold)
    assert w.book.all_blocked() == {A: Blocked(A, 0, "rec", "bad")}
    assert w.book.held_at(A) == [hold.held]
    assert w.gauge("restate_bridge_partition_blocked", A) == 1
    w.kafka.flow.apply(True)
    assert w.consumer.paused == {A}
    [row] = w.operator.controls_view()["blocked"]
    assert (row["offset"], row["owned"]) == (0, True)

    w.dispatcher.held.add(A)  # the held job waits for the operator: the drain does not
    await w.revoke(A)
    assert pending.lease.ended, "the revocation ended the job's lease"
    w.book.hold_ended(hold)  # what delivery reports once the held job saw its lease end
    assert w.book.all_blocked() == {A: Blocked(A, 0, "rec", "bad")}, "remembered"
    assert w.book.held_at(A) == []
    [row] = w.operator.controls_view()["blocked"]
    assert row["owned"] is False

    answer = await w.operator.release(A, ReleaseRetry())
    assert answer["refetch"] is True
    assert w.book.all_blocked() == {}
    assert w.operator.controls_view()["blocked"] == []


async def test_a_skip_racing_a_revocation_is_refused_not_answered_done() -> None:
    """The partition is revoked while the skipped record is being produced: the release must
    not say it skipped the record, because the next owner reads it again."""
    w = World()
    w.take(A, 0)
    pending = w.dispatcher.jobs[0][0]
    hold = Hold(Held((pending.record,), "rec", "bad"), pending.lease)
    w.book.held(hold)
    producing, produced = asyncio.Event(), asyncio.Event()

    async def prepare(helds: Sequence[Held]) -> None:
        producing.set()
        await produced.wait()

    release = asyncio.create_task(w.book.release(A, "skip", prepare))
    await producing.wait()
    w.dispatcher.held.add(A)
    await w.revoke(A)
    produced.set()
    with pytest.raises(NotBlocked, match="revoked during the release"):
        await release
    assert not hold.decided


async def test_a_paused_route_a_reload_removed_can_still_be_resumed() -> None:
    w = World()
    w.operator.pause("route", "rec", True)
    w.routes.use(parse_config(RENAMED, Path("routes.toml"), {}))
    w.kafka.flow.apply(True)
    assert "rec" in w.operator.controls_view()["paused_routes"]
    answer = w.operator.pause("route", "rec", False)
    assert answer["changed"] is True
    assert w.controls.paused_routes == set()
    assert w.dispatcher.pause_changes == 2  # the waiting jobs looked again both times
    with pytest.raises(UnknownName, match="known routes: renamed"):
        w.operator.pause("route", "rec", True)  # pausing it again: it is gone


async def test_a_pause_stops_fetching_at_the_next_turn_without_any_reapply() -> None:
    w = World(more_routes=AUDIT, assigned=(A, P))
    w.operator.pause("topic", "payments", True)
    await w.kafka.turn()  # one turn of the consume loop
    assert w.consumer.paused == {P}
    w.routes.use(config(more_routes=AUDIT.replace('"orders", "payments"', '"orders"')))
    await w.kafka.turn()  # a reload's routes: the paused topic is still paused
    assert w.consumer.paused == {P}
    w.operator.pause("topic", "payments", False)
    await w.kafka.turn()
    assert w.consumer.paused == set()


# -- transactional topics -----------------------------------------------------------------------


async def test_an_idle_partition_commits_past_transaction_markers_never_past_unfinished() -> None:
    """Offsets 3 and 4 are a commit marker and an aborted record: never handed to the bridge,
    they are passed by the consumer's position, which an idle partition commits."""
    w = World()
    w.take(A, 0, 1, 2)
    w.consumer.positions = {A: 5}
    w.finish(A, 0)
    w.finish(A, 1)
    await w.kafka.committer.commit()
    assert w.consumer.commits == [{A: 2}], "2 is unfinished: the position is not committed"
    w.finish(A, 2)
    await w.kafka.committer.commit()
    assert w.consumer.commits[-1] == {A: 5}
    w.take(A, 5)  # the next record, after the markers
    assert submitted(w, A)[-1] == 5
    w.finish(A, 5)
    w.consumer.positions = {A: 6}
    await w.kafka.committer.commit()
    assert w.consumer.commits[-1] == {A: 6}
