"""Batch routes through bridge.dispatch against a fake ingress (real HTTP, same event loop): a
batch finishes its records only once accepted, is retried whole, and a batch refused with a 4xx
is retried record by record so that only the bad records are dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka.errors import MessageSizeTooLargeError

from bridge.config import BatchConfig, DeliveryConfig, RouteConfig
from bridge.core.batching import encode_item
from bridge.core.controls import Blocked
from bridge.core.offsets import TopicPartition
from bridge.core.record import Record, RecordView
from bridge.core.routing import Invocation
from bridge.core.status_policy import parse_statuses
from bridge.deliver.dispatcher import Dispatcher
from bridge.deliver.health import IngressHealth
from bridge.deliver.lease import PendingRecord
from bridge.ingress import Client
from bridge.operate.metrics import Metrics
from bridge.sinks.deadletter import DeadLetterSink
from tests.fakes import FakeBook
from tests.helpers import until
from tests.test_dispatch import FakeProducer, route_config

TP = TopicPartition("orders", 0)


@dataclass
class Request:
    key: str | None
    idempotency_key: str | None
    items: list[dict[str, Any]]

    @property
    def offsets(self) -> list[int]:
        return [i["offset"] for i in self.items]


@dataclass
class BatchIngress:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    applied: dict[str | None, list[int]] = field(default_factory=lambda: defaultdict(list))
    seen_keys: set[str] = field(default_factory=set)
    bad_offsets: set[int] = field(default_factory=set)
    """A batch holding one of these is answered 400."""
    answers: list[int] = field(default_factory=list)
    """Statuses to answer first, one per request (then 202 or the bad-offset rule)."""
    gate: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        items = json.loads(await request.read())
        idem = request.headers.get("idempotency-key")
        key = request.match_info.get("key")
        self.requests.append(Request(key, idem, items))
        if self.gate is not None:
            await self.gate.wait()
        status = self.answers.pop(0) if self.answers else 202
        if status == 202 and self.bad_offsets & {i["offset"] for i in items}:
            status = 400
        if status != 202:
            return web.json_response({"code": status, "message": "no"}, status=status)
        duplicate = idem is not None and idem in self.seen_keys
        if not duplicate:
            if idem is not None:
                self.seen_keys.add(idem)
            self.applied[key].extend(i["offset"] for i in items)
        doc = {"invocationId": "inv_1", "status": "PreviouslyAccepted" if duplicate else "Accepted"}
        return web.json_response(doc, status=202)


@pytest.fixture
async def ingress() -> AsyncIterator[BatchIngress]:
    fake = BatchIngress()
    app = web.Application()
    app.router.add_post("/{service}/{key}/{handler}/send", fake.handle)
    app.router.add_post("/{service}/{handler}/send", fake.handle)
    server = TestServer(app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@dataclass
class Harness:
    dispatcher: Dispatcher
    metrics: Metrics
    producer: FakeProducer
    book: FakeBook

    @property
    def finished(self) -> list[int]:
        return [p.record.offset for p in self.book.done]

    @property
    def blocked(self) -> list[Blocked]:
        return self.book.blocked

    def send(
        self,
        offset: int,
        key: str = "a",
        *,
        batch: BatchConfig,
        kind: str = "object",
        value: bytes = b'{"n": 1}',
        route: str = "r",
    ) -> PendingRecord:
        rec = Record(TP.topic, TP.partition, offset, 0, key.encode(), value)
        pending = self.book.pending(rec)
        inv = Invocation(
            route=route,
            kind=kind,  # type: ignore[arg-type]
            service="Ledger",
            handler="apply",
            key=key if kind == "object" else None,
            body=encode_item(RecordView(rec)),
            content_type="application/json",
            delay=None,
            idempotency_key=None,
            lane=("Ledger", key) if kind == "object" else None,
            batch=batch,
        )
        self.dispatcher.submit(pending, inv)
        return pending

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0

    async def finished_all(self, *offsets: int) -> None:
        await until(
            lambda: sorted(self.finished),
            lambda got: got == sorted(offsets),
            f"records {sorted(offsets)} finished",
            timeout=3.0,
            interval=0.002,
        )


@pytest.fixture
async def harness(ingress: BatchIngress) -> AsyncIterator[Callable[..., Harness]]:
    made: list[tuple[Harness, Client]] = []

    def make(*, grace: float = 0.2, routes: tuple[RouteConfig, ...] = ()) -> Harness:
        client = Client(ingress.url, timeout=5.0)
        metrics = Metrics()
        health = IngressHealth(metrics)
        health.mark_up()
        producer = FakeProducer()
        book = FakeBook()
        dispatcher = Dispatcher(
            client=client,
            metrics=metrics,
            health=health,
            delivery=DeliveryConfig(
                retry_initial=timedelta(milliseconds=1),
                retry_max=timedelta(milliseconds=20),
                unknown_target_grace=timedelta(seconds=grace),
            ),
            outcomes=book,
            pauses=book.controls,
            dead_letters=DeadLetterSink(producer, "dlq"),
            request_timeout=2.0,
        )
        dispatcher.configure_routes(routes)
        h = Harness(dispatcher, metrics, producer, book)
        made.append((h, client))
        return h

    yield make
    for h, client in made:
        await h.dispatcher.aclose()
        assert h.dispatcher.busy == 0
        await client.aclose()


FIVE = BatchConfig(max_records=5, max_wait=timedelta(seconds=5))


async def test_a_full_batch_is_one_invocation_and_finishes_its_records(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness()
    for offset in range(5):
        h.send(offset, batch=FIVE)
    await h.finished_all(0, 1, 2, 3, 4)
    (req,) = ingress.requests
    assert req.offsets == [0, 1, 2, 3, 4]
    assert req.idempotency_key == "orders-0-0-4:r"
    assert req.key == "a"
    assert {i["key"] for i in req.items} == {"a"}
    assert h.count("restate_bridge_invocations_total", route="r", outcome="accepted") == 1
    labels = {"topic": "orders", "route": "r", "outcome": "accepted"}
    assert h.count("restate_bridge_messages_total", **labels) == 5
    assert h.count("restate_bridge_batch_size_sum", route="r") == 5
    assert h.count("restate_bridge_batch_size_count", route="r") == 1


async def test_no_record_finishes_before_its_batch_is_accepted(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    ingress.gate = asyncio.Event()
    h = harness()
    for offset in range(5):
        h.send(offset, batch=FIVE)
    await until(lambda: len(ingress.requests), lambda n: n == 1, "the batch sent", 2.0, 0.002)
    await asyncio.sleep(0.05)
    assert h.finished == []
    ingress.gate.set()
    await h.finished_all(0, 1, 2, 3, 4)


async def test_an_object_batch_holds_one_key_and_a_keys_batches_go_in_order(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    ingress.gate = asyncio.Event()
    h = harness()
    two = BatchConfig(max_records=2, max_wait=timedelta(seconds=5))
    for offset, key in enumerate("abaabb"):
        h.send(offset, key, batch=two)
    # a [0, 2] and b [1, 4] are under way; a [3] is open, b [5] too
    await until(lambda: len(ingress.requests), lambda n: n == 2, "two batches sent", 2.0, 0.002)
    for offset, key in ((6, "a"), (7, "b"), (8, "b")):
        h.send(offset, key, batch=two)  # closes a [3, 6] and b [5, 7]; b [8] stays open
    await asyncio.sleep(0.05)
    assert len(ingress.requests) == 2, "a key's next batch went before its previous was accepted"
    ingress.gate.set()
    await h.finished_all(0, 1, 2, 3, 4, 5, 6, 7)
    h.dispatcher.flush()
    await h.finished_all(*range(9))
    for req in ingress.requests:
        assert {i["key"] for i in req.items} == {req.key}, req
    assert ingress.applied["a"] == [0, 2, 3, 6]
    assert ingress.applied["b"] == [1, 4, 5, 7, 8]


async def test_a_batch_closes_after_max_wait(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness()
    quick = BatchConfig(max_records=100, max_wait=timedelta(milliseconds=20))
    slow = BatchConfig(max_records=100, max_wait=timedelta(seconds=30))
    h.send(0, "s", batch=slow)  # the timer sleeps for this one first ...
    h.send(1, "a", batch=quick)  # ... and must wake for the shorter wait
    h.send(2, "a", batch=quick)
    await h.finished_all(1, 2)
    assert [r.offsets for r in ingress.requests] == [[1, 2]]


async def test_a_batch_is_retried_whole_with_the_same_idempotency_key(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    ingress.answers = [503, 429]
    h = harness()
    for offset in range(5):
        h.send(offset, batch=FIVE)
    await h.finished_all(0, 1, 2, 3, 4)
    assert [r.offsets for r in ingress.requests] == [[0, 1, 2, 3, 4]] * 3
    assert {r.idempotency_key for r in ingress.requests} == {"orders-0-0-4:r"}
    assert ingress.applied["a"] == [0, 1, 2, 3, 4]
    assert h.producer.sent == []


async def test_a_batch_refused_with_a_4xx_is_retried_record_by_record(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    ingress.bad_offsets = {2}
    h = harness()
    for offset in range(5):
        h.send(offset, batch=FIVE)
    await h.finished_all(0, 1, 2, 3, 4)
    assert [r.offsets for r in ingress.requests] == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    assert [r.idempotency_key for r in ingress.requests[1:3]] == [
        "orders-0-0-0:r",
        "orders-0-1-1:r",
    ]
    assert ingress.applied["a"] == [0, 1, 3, 4]
    (letter,) = h.producer.sent
    assert dict(letter["headers"])["bridge.offset"] == b"2"
    outcomes = {
        o: h.count("restate_bridge_invocations_total", route="r", outcome=o)
        for o in ("accepted", "dead_lettered")
    }
    assert outcomes == {"accepted": 4, "dead_lettered": 1}
    labels = {"topic": "orders", "route": "r"}
    assert h.count("restate_bridge_messages_total", **labels, outcome="accepted") == 4
    assert h.count("restate_bridge_messages_total", **labels, outcome="dead_lettered") == 1


async def test_an_unknown_target_dead_letters_every_record_without_splitting(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    ingress.answers = [404] * 1000
    h = harness(grace=0.05)
    for offset in range(3):
        h.send(offset, batch=BatchConfig(max_records=3))
    await h.finished_all(0, 1, 2)
    assert {tuple(r.offsets) for r in ingress.requests} == {(0, 1, 2)}
    assert len(h.producer.sent) == 3
    assert h.count("restate_bridge_invocations_total", route="r", outcome="dead_lettered") == 1


async def test_a_service_batch_mixes_keys(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness()
    for offset, key in enumerate("abcab"):
        h.send(offset, key, batch=FIVE, kind="service")
    await h.finished_all(0, 1, 2, 3, 4)
    (req,) = ingress.requests
    assert req.key is None
    assert [i["key"] for i in req.items] == list("abcab")


async def test_a_revoked_partition_drops_its_open_batch(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness()
    h.send(0, batch=FIVE)
    h.book.revoke({TP})
    h.dispatcher.flush()
    await asyncio.sleep(0.05)
    assert ingress.requests == []
    assert h.finished == []


async def test_flushing_some_routes_closes_only_their_batches(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    """A reload closes the open batches of the routes it removes or changes (they hold
    invocations planned by the old route), and leaves the others to fill up."""
    h = harness()
    h.send(0, "a", batch=FIVE, route="changed")
    h.send(1, "a", batch=FIVE, route="kept")
    h.dispatcher.flush({"changed", "removed"})
    await h.finished_all(0)
    assert [r.offsets for r in ingress.requests] == [[0]]
    h.send(2, "a", batch=FIVE, route="changed")  # planned by the new route: a batch of its own
    h.dispatcher.flush()
    await h.finished_all(0, 1, 2)
    assert sorted(r.offsets for r in ingress.requests) == [[0], [1], [2]]


# -- per-route policies on batch routes --------------------------------------------------------


async def test_a_batch_takes_one_token_per_record(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness(routes=(route_config("r", rate_limit=50.0, rate_limit_burst=2),))
    started = time.monotonic()
    for offset in range(10):
        h.send(offset, batch=FIVE)
    await h.finished_all(*range(10))
    assert time.monotonic() - started >= (10 - 2) / 50 * 0.95
    assert [r.offsets for r in ingress.requests] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert h.count("restate_bridge_rate_limited_total", route="r") == 10


async def test_block_on_blocks_a_batch_whole_without_splitting_or_dead_letters(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness(routes=(route_config("r", block_on=parse_statuses([400], "block_on")[0]),))
    ingress.answers = [400]
    for offset in range(5):
        h.send(offset, batch=FIVE)
    await until(lambda: h.blocked, bool, "blocked", 3.0, 0.002)
    await asyncio.sleep(0.05)
    (blocked,) = h.blocked
    assert (blocked.offset, blocked.reason) == (0, "ingress answered 400: no (block_on)")
    assert len(ingress.requests) == 1  # not retried record by record
    assert h.finished == []
    assert h.producer.sent == []
    h.book.revoke({TP})


async def test_a_batch_record_blocked_by_its_dead_letter_is_released_and_the_rest_go_on(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    refusing = [True]
    h = harness()
    h.producer.fail = lambda call, value: (
        MessageSizeTooLargeError("too large") if refusing[0] else None
    )
    ingress.bad_offsets = {2}
    for offset in range(5):
        h.send(offset, batch=FIVE)

    def held() -> list[int]:
        return [each.offset for each in h.book.held_at(TP)]

    await until(held, lambda got: got == [2], "offset 2 blocked", 3.0, 0.002)
    await h.finished_all(0, 1)  # split record by record: 0 and 1 went, 3 and 4 wait behind 2

    await h.book.release(TP, "retry")  # the same refusal again: blocked again
    await until(held, lambda got: got == [2], "offset 2 blocked again", 3.0, 0.002)
    assert [r.offsets for r in ingress.requests].count([2]) == 2

    refusing[0] = False
    await h.book.release(TP, "retry")
    await h.finished_all(0, 1, 2, 3, 4)
    assert ingress.applied["a"] == [0, 1, 3, 4]
    assert [m["headers"][-1] for m in h.producer.sent] == [("bridge.offset", b"2")]


async def test_a_batch_record_blocked_is_skipped_and_the_rest_go_on(
    ingress: BatchIngress, harness: Callable[..., Harness]
) -> None:
    h = harness()
    h.producer.fail = lambda call, value: MessageSizeTooLargeError("too large")
    ingress.bad_offsets = {1}
    for offset in range(3):
        h.send(offset, batch=BatchConfig(max_records=3, max_wait=timedelta(seconds=5)))
    await until(lambda: h.book.held_at(TP), bool, "offset 1 blocked", 3.0, 0.002)
    [released] = await h.book.release(TP, "skip")
    assert released.offset == 1
    await h.finished_all(0, 1, 2)
    assert ingress.applied["a"] == [0, 2]
    labels = {"topic": "orders", "route": "r", "outcome": "skipped"}
    assert h.count("restate_bridge_messages_total", **labels) == 1
