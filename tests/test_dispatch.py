"""bridge.dispatch against a fake ingress: real HTTP through the real ``bridge.ingress.Client`` to
an aiohttp test server in the same event loop. Lanes, limits and every decision, in milliseconds.

The fake applies a send once per idempotency key (a second one answers ``PreviouslyAccepted``, as
Restate does), and remembers what it saw: the order of applied sends per object key, and how
many requests were under way at once, per route.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from bridge.config import DeliveryConfig, RouteConfig
from bridge.core.controls import Blocked, NotBlocked, ReleaseAction
from bridge.core.offsets import TopicPartition
from bridge.core.record import Record
from bridge.core.routing import Invocation, Poison
from bridge.core.status_policy import parse_statuses
from bridge.deliver.dispatcher import Dispatcher
from bridge.deliver.health import IngressHealth
from bridge.deliver.holds import Held
from bridge.deliver.lease import PendingRecord
from bridge.ingress import Client
from bridge.operate.metrics import Metrics
from bridge.sinks.deadletter import DeadLetter, DeadLetterSink
from tests.fakes import FakeBook
from tests.helpers import answer_cut_short, until

TOPIC = "orders"
TP = TopicPartition(TOPIC, 0)
RETRY_MAX = 0.05
GRACE = 0.2
TIMEOUT = 0.15


# -- the fake ingress -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted answer: an error status (with headers and a ``source``), a slow answer, a
    connection closed mid-response, or a gate the test opens."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    wait: float = 0.0
    close_midway: bool = False
    gate: asyncio.Event | None = None


@dataclass
class Seen:
    route: str
    key: str
    seq: int
    idempotency_key: str
    at: float
    headers: dict[str, str]


@dataclass
class FakeIngress:
    url: str = ""
    scripts: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    """Answers per object key (then 202 forever)."""
    seen: list[Seen] = field(default_factory=list)
    applied: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """Per object key, the ``seq`` of each applied send, in the order applied."""
    idempotency: set[str] = field(default_factory=set)
    overtakes: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    on_request: Callable[[Seen], None] | None = None

    def script(self, key: str, *answers: Answer | int) -> None:
        self.scripts[key].extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def requests(self, key: str) -> list[Seen]:
        return [s for s in self.seen if s.key == key]

    @property
    def total_peak(self) -> int:
        return self.peak["*"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route, key = request.match_info["service"], request.match_info["key"]
        seq = int(request.headers.get("x-seq", "-1"))
        idem = request.headers.get("idempotency-key", "")
        seen = Seen(route, key, seq, idem, time.monotonic(), dict(request.headers))
        self.seen.append(seen)
        if self.on_request is not None:
            self.on_request(seen)
        # a later record of a key must never arrive before every earlier one was applied
        if seq >= 0 and any(s > seq for s in self.applied[key]):
            self.overtakes.append(f"{key}: {seq} after {self.applied[key]}")
        unapplied = {s.seq for s in self.seen if s.key == key and s.seq < seq}
        if unapplied - set(self.applied[key]):
            self.overtakes.append(f"{key}: {seq} sent before {sorted(unapplied)} were applied")
        for counter in (route, "*"):
            self.in_flight[counter] += 1
            self.peak[counter] = max(self.peak[counter], self.in_flight[counter])
        try:
            answer = self.scripts[key].popleft() if self.scripts[key] else Answer()
            if answer.gate is not None:
                await answer.gate.wait()
            if answer.wait:
                await asyncio.sleep(answer.wait)
            if answer.status != 202:
                body = {"code": answer.status, "message": f"scripted {answer.status}"}
                if answer.source:
                    body["source"] = answer.source
                return web.json_response(body, status=answer.status, headers=answer.headers)
            status = "PreviouslyAccepted" if idem in self.idempotency else "Accepted"
            if idem not in self.idempotency:
                self.idempotency.add(idem)
                self.applied[key].append(seq)
            doc = b'{"invocationId": "inv_1", "status": "%s"}' % status.encode()
            if answer.close_midway:  # applied, but the answer never arrives whole
                return await answer_cut_short(request, 202, doc)
            return web.Response(status=202, body=doc, content_type="application/json")
        finally:
            for counter in (route, "*"):
                self.in_flight[counter] -= 1


@pytest.fixture
async def ingress() -> AsyncIterator[FakeIngress]:
    fake = FakeIngress()
    app = web.Application()
    app.router.add_post("/{service}/{key}/{handler}/send", fake.handle)
    server = TestServer(app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


# -- the dispatcher under test ----------------------------------------------------------------


@dataclass
class FakeProducer:
    """The producer interface ``DeadLetterSink`` uses; ``fail`` decides per call."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    fail: Callable[[int, bytes | None], Exception | None] = lambda call, value: None

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.calls += 1
        await asyncio.sleep(0)  # a real producer yields
        if (exc := self.fail(self.calls, kwargs["value"])) is not None:
            raise exc
        self.sent.append({"topic": topic, **kwargs})


@dataclass
class Harness:
    dispatcher: Dispatcher
    metrics: Metrics
    health: IngressHealth
    producer: FakeProducer
    book: FakeBook

    @property
    def finished(self) -> list[PendingRecord]:
        return self.book.done

    @property
    def blocked(self) -> list[Blocked]:
        return self.book.blocked

    @property
    def dead(self) -> list[DeadLetter]:
        return self.book.dead

    @property
    def broken_callbacks(self) -> set[int]:
        """Offsets whose ``dead_lettered`` raises (a bug on the Kafka side)."""
        return self.book.broken_dead_letter_offsets

    def drop(self, tps: set[TopicPartition]) -> None:
        """Revoke ``tps``: their leases end."""
        self.book.revoke(tps)

    def held(self, tp: TopicPartition) -> list[Held]:
        return self.book.held_at(tp)

    async def release(
        self,
        tp: TopicPartition,
        action: ReleaseAction,
        prepare: Callable[[Sequence[Held]], Awaitable[None]] | None = None,
    ) -> list[Held]:
        return await self.book.release(tp, action, prepare)

    def set_paused(self, routes: Iterable[str], topics: Iterable[str]) -> None:
        self.book.controls.paused_routes = set(routes)
        self.book.controls.paused_topics = set(topics)
        self.dispatcher.pauses_changed()

    def pending(self, record: Record) -> PendingRecord:
        return self.book.pending(record)

    def send(
        self,
        offset: int,
        key: str,
        *,
        route: str = "Ledger",
        seq: int | None = None,
        tp: TopicPartition = TP,
        headers: dict[str, str] | None = None,
        lane: bool = True,
        record_key: bytes | None = b"k",
        value: bytes | None = b'{"n": 1}',
    ) -> PendingRecord:
        """Submit one record of ``tp`` for object ``key`` of service ``route``."""
        rec = Record(tp.topic, tp.partition, offset, 0, record_key, value)
        pending = self.pending(rec)
        inv = Invocation(
            route=route,
            kind="object",
            service=route,
            handler="append",
            key=key,
            body=value,
            content_type="application/json",
            delay=None,
            idempotency_key=f"{tp.topic}-{tp.partition}-{offset}",
            headers={"x-seq": str(offset if seq is None else seq), **(headers or {})},
            lane=(route, key) if lane else None,
        )
        self.dispatcher.submit(pending, inv)
        return pending

    def poison(self, offset: int, reason: str, *, key: bytes | None = b"k") -> PendingRecord:
        rec = Record(TOPIC, 0, offset, 0, key, None)
        pending = self.pending(rec)
        self.dispatcher.submit(pending, Poison("Ledger", reason))
        return pending

    def outcome(self, outcome: str, route: str = "Ledger") -> float:
        labels = {"topic": TOPIC, "route": route, "outcome": outcome}
        return self.metrics.registry.get_sample_value("restate_bridge_messages_total", labels) or 0

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0

    async def finished_offsets(self, *offsets: int, timeout: float = 3.0) -> None:
        want = set(offsets)
        await until(
            lambda: {p.record.offset for p in self.finished},
            lambda got: want <= got,
            f"records {sorted(want)} finished",
            timeout=timeout,
            interval=0.002,
        )


HarnessFactory = Callable[..., Harness]


def route_config(name: str, **options: Any) -> RouteConfig:
    """The per-route options of route ``name`` (``max_in_flight``, ``rate_limit``, ...)."""
    return RouteConfig(
        name=name, line=1, target="object", service=name, handler="append", **options
    )


async def idle(h: Harness) -> None:
    """Every job ended, quickly (a job spinning after its partition was revoked fails here)."""
    await until(lambda: h.dispatcher.busy, lambda n: n == 0, "no job left", 1.0, 0.002)


@pytest.fixture
async def harness(ingress: FakeIngress) -> AsyncIterator[HarnessFactory]:
    made: list[tuple[Harness, Client]] = []

    def make(
        *,
        dead_letter: bool = True,
        max_in_flight: int = 64,
        routes: tuple[RouteConfig, ...] = (),
        timeout: float = TIMEOUT,
        producer: FakeProducer | None = None,
    ) -> Harness:
        client = Client(ingress.url, timeout=5.0)
        metrics = Metrics()
        health = IngressHealth(metrics)
        health.mark_up()
        producer = producer or FakeProducer()
        delivery = DeliveryConfig(
            max_in_flight=max_in_flight,
            retry_initial=timedelta(milliseconds=1),
            retry_max=timedelta(seconds=RETRY_MAX),
            unknown_target_grace=timedelta(seconds=GRACE),
        )
        book = FakeBook()
        dispatcher = Dispatcher(
            client=client,
            metrics=metrics,
            health=health,
            delivery=delivery,
            outcomes=book,
            pauses=book.controls,
            dead_letters=DeadLetterSink(producer, "dlq") if dead_letter else None,
            request_timeout=timeout,
        )
        dispatcher.configure_routes(routes)
        h = Harness(dispatcher, metrics, health, producer, book)
        made.append((h, client))
        return h

    before = asyncio.all_tasks()
    yield make
    for h, client in made:
        await h.dispatcher.aclose()
        assert h.dispatcher.busy == 0
        await client.aclose()
    await asyncio.sleep(0)
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    leftover.discard(asyncio.current_task())  # type: ignore[arg-type]
    assert not [t for t in leftover if "Dispatcher" in repr(t)], leftover


def dlq_headers(sent: dict[str, Any]) -> dict[str, bytes]:
    return dict(sent["headers"])


# -- answers ----------------------------------------------------------------------------------


async def test_accepted(ingress: FakeIngress, harness: HarnessFactory) -> None:
    h = harness()
    h.send(0, "a")
    await h.finished_offsets(0)
    assert ingress.applied["a"] == [0]
    assert h.outcome("accepted") == 1
    assert h.dispatcher.busy == 0


@pytest.mark.parametrize(
    ("status", "label", "up_seen"),
    [(429, "http_429", [True, True, True]), (503, "http_5xx", [True, False, False])],
)
async def test_429_is_retried_and_503_marks_the_ingress_down_until_it_answers(
    ingress: FakeIngress, harness: HarnessFactory, status: int, label: str, up_seen: list[bool]
) -> None:
    h = harness()
    seen: list[bool] = []
    ingress.on_request = lambda s: seen.append(h.health.up)
    ingress.script("a", status, status)  # without Retry-After
    h.send(0, "a")
    await h.finished_offsets(0)
    assert seen == up_seen
    assert h.health.up
    assert h.counter("restate_bridge_retries_total", route="Ledger") == 2
    assert h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason=label) == 2
    assert h.outcome("accepted") == 1


async def test_retry_after_is_honoured(ingress: FakeIngress, harness: HarnessFactory) -> None:
    h = harness()
    ingress.script("a", Answer(429, {"Retry-After": "0.04"}))
    h.send(0, "a")
    await h.finished_offsets(0)
    first, second = ingress.requests("a")
    assert second.at - first.at >= 0.04


@pytest.mark.parametrize(
    "retry_after",
    ["1e12", "inf", "nan", "-5", "Fri, 31 Dec 9999 23:59:59 GMT", "99999999999999999999", "x"],
)
async def test_absurd_retry_after_waits_at_most_retry_max(
    ingress: FakeIngress, harness: HarnessFactory, retry_after: str
) -> None:
    h = harness()
    asked = {"Retry-After": retry_after}
    ingress.script("a", Answer(429, asked), Answer(503, asked))
    h.send(0, "a")
    await h.finished_offsets(0, timeout=1.0)
    times = [s.at for s in ingress.requests("a")]
    assert len(times) == 3
    assert all(b - a < RETRY_MAX + 0.05 for a, b in itertools.pairwise(times)), times


async def test_404_then_202_within_the_grace(ingress: FakeIngress, harness: HarnessFactory) -> None:
    h = harness()
    ingress.script("a", Answer(404, source="ingress"), 404, 404)
    h.send(0, "a")
    await h.finished_offsets(0)
    assert len(ingress.requests("a")) == 4
    assert h.outcome("accepted") == 1
    assert h.dead == []


async def test_404_past_the_grace_is_dead_lettered(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    ingress.script("a", *[Answer(404, source="ingress")] * 1000)
    started = time.monotonic()
    h.send(0, "a")
    await h.finished_offsets(0)
    assert time.monotonic() - started >= GRACE
    assert h.outcome("dead_lettered") == 1
    (letter,) = h.dead
    assert letter.reason == "ingress answered 404 (ingress): scripted 404"
    (sent,) = h.producer.sent
    assert dlq_headers(sent)["bridge.error"] == b"ingress answered 404 (ingress): scripted 404"
    assert len(ingress.requests("a")) > 2


async def test_connection_closed_mid_response_is_retried_without_a_second_effect(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    ingress.script("a", Answer(close_midway=True))
    h.send(0, "a")
    await h.finished_offsets(0)
    assert len(ingress.requests("a")) == 2
    assert ingress.applied["a"] == [0]  # the idempotency key made the retry a no-op
    assert h.outcome("duplicate") == 1
    assert h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason="connect") == 1


async def test_slow_answer_times_out_and_is_retried(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(timeout=0.05)
    ingress.script("a", Answer(wait=0.3))
    h.send(0, "a")
    await h.finished_offsets(0)
    assert h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason="timeout") == 1
    assert len(ingress.requests("a")) == 2
    assert h.dead == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(400), "ingress answered 400: scripted 400"),
        (Answer(422, source="invocation"), "ingress answered 422 (invocation): scripted 422"),
        (Answer(503, source="invocation"), "ingress answered 503 (invocation): scripted 503"),
        (Answer(404, source="invocation"), "ingress answered 404 (invocation): scripted 404"),
    ],
)
async def test_terminal_answers_are_dead_lettered_at_once(
    ingress: FakeIngress, harness: HarnessFactory, answer: Answer, reason: str
) -> None:
    h = harness()
    ingress.script("a", answer)
    h.send(7, "a")
    await h.finished_offsets(7)
    assert len(ingress.requests("a")) == 1
    assert [d.reason for d in h.dead] == [reason]
    (sent,) = h.producer.sent
    assert sent["topic"] == "dlq"
    assert (sent["key"], sent["value"]) == (b"k", b'{"n": 1}')
    assert sent["headers"] == [
        ("bridge.error", reason.encode()),
        ("bridge.route", b"Ledger"),
        ("bridge.topic", b"orders"),
        ("bridge.partition", b"0"),
        ("bridge.offset", b"7"),
    ]
    assert h.outcome("dead_lettered") == 1


async def test_a_poison_is_dead_lettered_without_a_send(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    h.poison(3, "value is not JSON", key=None)
    await h.finished_offsets(3)
    assert ingress.seen == []
    (sent,) = h.producer.sent
    assert (sent["key"], sent["value"]) == (None, b"")  # neither key nor value: still producible
    assert dlq_headers(sent)["bridge.value_null"] == b"true"


# -- lanes and limits -------------------------------------------------------------------------


async def test_per_key_order_holds_under_retries(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    rng = random.Random(7)
    keys = [f"k{i}" for i in range(4)]
    flaky = [429, 503, Answer(close_midway=True), Answer(404, source="ingress"), 500]
    for key in keys:
        ingress.script(key, *[rng.choice(flaky) for _ in range(12)])
    offset = 0
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(15):
        for key in keys:
            h.send(offset, key, seq=n)
            expected[key].append(n)
            offset += 1
    await h.finished_offsets(*range(offset), timeout=5)
    assert ingress.overtakes == []
    assert dict(ingress.applied) == expected
    assert h.dead == []
    assert h.dispatcher.busy == 0


@pytest.mark.parametrize("limit", [1, 3])
async def test_the_global_in_flight_limit_holds(
    ingress: FakeIngress, harness: HarnessFactory, limit: int
) -> None:
    h = harness(max_in_flight=limit)
    for n in range(12):
        ingress.script(f"k{n}", Answer(wait=0.01))
        h.send(n, f"k{n}")
    await h.finished_offsets(*range(12))
    assert ingress.total_peak == limit


async def test_a_route_at_its_cap_does_not_starve_other_routes(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(
        max_in_flight=4, routes=(route_config("Slow", max_in_flight=2), route_config("Fast"))
    )
    gate = asyncio.Event()
    for n in range(8):
        ingress.script(f"s{n}", Answer(gate=gate))
        h.send(n, f"s{n}", route="Slow")
    await until(lambda: ingress.in_flight["Slow"], lambda n: n == 2, "Slow at its cap")
    for n in range(10):
        h.send(100 + n, f"f{n}", route="Fast")
    await h.finished_offsets(*range(100, 110))
    assert ingress.peak["Slow"] == 2
    assert len(h.finished) == 10  # the slow route's sends are all still waiting
    gate.set()
    await h.finished_offsets(*range(8))
    assert ingress.peak["Slow"] == 2
    assert ingress.total_peak <= 4


async def test_configure_routes_again_keeps_a_routes_cap_and_a_new_limit_takes_over(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """A reload calls configure_routes again: an unchanged limit keeps its semaphore (the sends
    under way still count), a route that is gone keeps its cap for what was planned before, and
    a route whose limit is lifted is uncapped from then on."""
    h = harness(max_in_flight=64, routes=(route_config("Slow", max_in_flight=2),), timeout=30)
    gate = asyncio.Event()
    for n in range(12):
        ingress.script(f"s{n}", Answer(gate=gate))
    for n in range(4):
        h.send(n, f"s{n}", route="Slow")
    await until(lambda: ingress.in_flight["Slow"], lambda n: n == 2, "Slow at its cap")
    h.dispatcher.configure_routes([route_config("Slow", max_in_flight=2)])  # unchanged
    h.dispatcher.configure_routes([route_config("Other")])  # Slow removed
    for n in range(4, 8):
        h.send(n, f"s{n}", route="Slow")  # planned before the removal
    await asyncio.sleep(0.05)
    assert ingress.in_flight["Slow"] == 2, "a reload lifted the cap of sends under way"
    h.dispatcher.configure_routes([route_config("Slow")])  # added again, no limit
    for n in range(8, 12):
        h.send(n, f"s{n}", route="Slow")
    await until(lambda: ingress.in_flight["Slow"], lambda n: n == 6, "the new sends uncapped")
    gate.set()
    await h.finished_offsets(*range(12))


# -- records that cannot become requests, bugs ------------------------------------------------


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "nul\x00", "del\x7f"])
async def test_header_value_with_control_bytes_is_dead_lettered_and_the_key_goes_on(
    ingress: FakeIngress, harness: HarnessFactory, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    h.send(0, "a")
    h.send(1, "a", headers={"x-trace": value})
    h.send(2, "a")
    await h.finished_offsets(0, 1, 2)
    assert ingress.applied["a"] == [0, 2]
    assert [s.seq for s in ingress.requests("a")] == [0, 2]  # nothing was sent for 1
    (letter,) = h.dead
    assert letter.record.offset == 1
    assert letter.reason.startswith("POST /Ledger/a/append/send: invalid request: ")
    assert (
        h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason="invalid_request")
        == 1
    )
    assert "orders-0@1" in caplog.text


async def test_an_unexpected_exception_is_an_internal_error_with_coordinates(
    ingress: FakeIngress, harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    rec = Record(TOPIC, 0, 5, 0, b"k", b"{}")
    pending = h.pending(rec)
    bad = Invocation(
        "Ledger",
        "object",
        "Ledger",
        "append",
        b"bytes-key",
        None,
        None,
        None,  # type: ignore[arg-type]
        None,
        lane=("Ledger", "a"),
    )
    h.dispatcher.submit(pending, bad)
    h.send(6, "a")
    with caplog.at_level(logging.ERROR, logger="bridge.deliver.dispatcher"):
        await h.finished_offsets(5, 6)
    (letter,) = h.dead
    assert letter.reason == "internal error: TypeError: keys, ids and names must be str, not bytes"
    assert "orders-0@5" in caplog.text
    assert "Traceback" in caplog.text
    assert h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason="internal") == 1
    assert ingress.applied["a"] == [6]


# -- blocking without a dead-letter topic -----------------------------------------------------


async def test_a_blocked_partition_holds_its_lane_until_revoked_then_skips_the_rest(
    ingress: FakeIngress, harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(dead_letter=False)
    other = TopicPartition(TOPIC, 1)
    ingress.script("a", 400)
    h.send(0, "a")
    h.send(1, "a")
    h.send(2, "b")
    h.send(50, "a", tp=other)  # same key, other partition: waits behind the blocked record
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    await h.finished_offsets(2)
    await asyncio.sleep(0.05)
    assert h.blocked == [Blocked(TP, 0, "Ledger", "ingress answered 400: scripted 400")]
    assert [s.seq for s in ingress.requests("a")] == [0]
    assert h.dispatcher.busy == 3  # 0 (blocked), 1 and 50 queued behind it
    assert "orders-0@0: partition orders-0 blocked at offset 0" in caplog.text

    h.drop({TP})
    await h.finished_offsets(50)
    assert [s.seq for s in ingress.requests("a")] == [0, 50]  # 1 was skipped as dropped
    assert {p.record.offset for p in h.finished} == {2, 50}
    assert h.dispatcher.busy == 0
    assert h.producer.sent == []


async def test_aclose_releases_blocked_retrying_and_queued_jobs(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("a", 400)
    ingress.script("b", *[503] * 10_000)
    ingress.script("c", Answer(gate=asyncio.Event()))
    for n, key in enumerate("aabbc"):
        h.send(n, key)
    h.send(10, "free", lane=False)
    ingress.script("free", Answer(gate=asyncio.Event()))
    await until(
        lambda: h.blocked and len(ingress.requests("b")) > 2 and ingress.requests("c"),
        bool,
        "blocked, retrying and waiting jobs",
        timeout=3,
        interval=0.002,
    )
    assert h.dispatcher.busy == 6
    before = asyncio.all_tasks()
    await asyncio.wait_for(h.dispatcher.aclose(), 1)
    assert h.dispatcher.busy == 0
    assert not [t for t in before if not t.done() and "Dispatcher" in repr(t)]
    await h.dispatcher.aclose()  # twice is fine
    with pytest.raises(RuntimeError):
        h.send(99, "z")


async def test_a_revoked_partition_stops_retrying(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    ingress.script("a", *[503] * 10_000)
    h.send(0, "a")
    h.send(1, "a")
    await until(lambda: len(ingress.requests("a")), lambda n: n > 3, "retrying", interval=0.002)
    h.drop({TP})
    await idle(h)
    count = len(ingress.requests("a"))
    await asyncio.sleep(RETRY_MAX * 2)
    assert len(ingress.requests("a")) == count
    assert {s.seq for s in ingress.requests("a")} == {0}
    assert h.finished == []
    assert h.dead == []

    # the partition comes back: its records are new jobs and go through
    h.send(0, "x")
    await h.finished_offsets(0)


# -- the dead-letter path ---------------------------------------------------------------------


async def test_dead_letter_too_large_is_sent_without_its_value(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    too_large = MessageSizeTooLargeError("The message is 2087 bytes when serialized")
    producer = FakeProducer(fail=lambda call, value: too_large if value else None)
    h = harness(producer=producer)
    ingress.script("a", 400)
    h.send(4, "a")
    await h.finished_offsets(4)
    (sent,) = producer.sent
    assert (sent["key"], sent["value"]) == (b"k", None)
    headers = sent["headers"]
    assert [n for n, _ in headers] == [
        "bridge.error",
        "bridge.route",
        "bridge.topic",
        "bridge.partition",
        "bridge.offset",
        "bridge.original_value_size",
        "bridge.value_dropped",
    ]
    assert dict(headers)["bridge.original_value_size"] == b"8"
    assert dict(headers)["bridge.value_dropped"].startswith(b"too large: MessageSizeTooLargeError")
    assert h.outcome("dead_lettered") == 1
    assert h.counter("restate_bridge_dead_letter_errors_total") == 1


async def test_dead_letter_refused_even_without_value_blocks_visibly(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    producer = FakeProducer(fail=lambda call, value: TopicAuthorizationFailedError())
    h = harness(producer=producer)
    ingress.script("a", 400)
    h.send(4, "a")
    h.send(5, "a")
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    await asyncio.sleep(0.05)
    assert producer.calls == 2  # with the value, then without: no endless retry
    (blocked,) = h.blocked
    assert blocked.offset == 4
    assert blocked.reason.startswith("dead-letter produce failed without the value too: ")
    assert blocked.reason.endswith("(dead letter for: ingress answered 400: scripted 400)")
    assert h.finished == []
    assert h.dead == []
    assert [s.seq for s in ingress.requests("a")] == [4]  # 5 waits behind it
    h.drop({TP})
    await idle(h)
    assert [s.seq for s in ingress.requests("a")] == [4]


async def test_retriable_dead_letter_errors_are_retried_until_they_pass(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    producer = FakeProducer(fail=lambda call, v: KafkaConnectionError() if call <= 3 else None)
    h = harness(producer=producer)
    h.poison(9, "bad")
    await h.finished_offsets(9)
    assert producer.calls == 4
    assert producer.sent[0]["value"] is None
    assert producer.sent[0]["key"] == b"k"
    assert h.counter("restate_bridge_dead_letter_errors_total") == 3


async def test_dead_lettering_stops_when_the_partition_is_revoked(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    producer = FakeProducer(fail=lambda call, value: KafkaConnectionError())
    h = harness(producer=producer)
    h.poison(9, "bad")
    await until(lambda: producer.calls, lambda n: n > 2, "dead letter retried", interval=0.002)
    h.drop({TP})
    await idle(h)
    calls = producer.calls
    await asyncio.sleep(RETRY_MAX * 2)
    assert producer.calls == calls
    assert h.finished == []
    assert h.dead == []
    assert h.blocked == []


async def test_a_producer_bug_blocks_instead_of_ending_the_lane(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    producer = FakeProducer(fail=lambda call, value: AssertionError("Need at least one"))
    h = harness(producer=producer)
    h.poison(1, "bad")
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    assert h.blocked[0].reason.startswith("dead-letter produce failed: AssertionError")


# -- bugs and revocations around the edges ----------------------------------------------------


async def test_a_bug_in_a_callback_blocks_the_record_visibly_and_the_lane_survives(
    ingress: FakeIngress, harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    h.broken_callbacks.add(1)
    ingress.script("a", 200, 400)  # 200 is no 202: "unexpected answer" -> dead letter
    h.send(0, "a")
    h.send(1, "a")
    h.send(2, "a")
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    (blocked,) = h.blocked
    assert blocked.offset == 1
    assert blocked.reason == "internal error: RuntimeError: bug in on_dead_letter"
    assert "orders-0@1: internal error: RuntimeError" in caplog.text
    assert h.dispatcher.busy == 2  # 1 holds the lane, 2 waits behind it
    assert [s.seq for s in ingress.requests("a")] == [0, 1]
    h.drop({TP})
    await idle(h)
    assert "dispatch task failed" not in caplog.text


@pytest.mark.parametrize("dead_letter", [True, False])
async def test_jobs_of_a_partition_revoked_before_they_start_do_nothing(
    ingress: FakeIngress, harness: HarnessFactory, dead_letter: bool
) -> None:
    h = harness(dead_letter=dead_letter)
    h.poison(0, "bad")
    h.send(1, "a")
    h.send(2, "b", lane=False)
    h.drop({TP})
    await idle(h)
    await asyncio.sleep(0.02)
    assert ingress.seen == []
    assert h.blocked == []
    assert h.producer.calls == 0
    assert h.finished == []


# -- per-route policies: status lists, rate limits (configure_routes) --------------------------


def statuses(**lists: list[int | str]) -> dict[str, Any]:
    return {key: parse_statuses(value, key)[0] for key, value in lists.items()}


async def test_retry_on_retries_a_listed_4xx_until_accepted_never_dead_letters(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Ledger", **statuses(retry_on=[409])),))
    ingress.script("a", 409, 409, 409)
    h.send(0, "a")
    h.send(1, "a")
    await h.finished_offsets(0, 1)
    assert [s.seq for s in ingress.requests("a")] == [0, 0, 0, 0, 1]
    assert ingress.applied["a"] == [0, 1]
    assert h.counter("restate_bridge_ingress_errors_total", route="Ledger", reason="http_409") == 3
    assert h.counter("restate_bridge_retries_total", route="Ledger") == 3
    assert h.producer.sent == []
    assert h.health.up  # a 409 says nothing about the ingress's health


async def test_without_the_list_the_same_409_is_dead_lettered(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Other", **statuses(retry_on=[409])),))
    ingress.script("a", 409)
    h.send(0, "a")
    await h.finished_offsets(0)
    (sent,) = h.producer.sent
    assert dlq_headers(sent)["bridge.error"] == b"ingress answered 409: scripted 409"


async def test_dead_letter_on_gives_up_on_a_listed_5xx_at_once(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Ledger", **statuses(dead_letter_on=["5xx"])),))
    ingress.script("a", Answer(503, source="ingress"))
    h.send(0, "a")
    h.send(1, "a")
    await h.finished_offsets(0, 1)
    assert [s.seq for s in ingress.requests("a")] == [0, 1]  # never retried
    (sent,) = h.producer.sent
    assert dlq_headers(sent)["bridge.error"] == (
        b"ingress answered 503 (ingress): scripted 503 (dead_letter_on)"
    )
    assert h.outcome("dead_lettered") == 1
    assert h.counter("restate_bridge_retries_total", route="Ledger") == 0


async def test_dead_letter_on_without_a_dead_letter_topic_blocks_as_today(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(
        dead_letter=False, routes=(route_config("Ledger", **statuses(dead_letter_on=[503])),)
    )
    ingress.script("a", 503)
    h.send(0, "a")
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    assert h.blocked == [
        Blocked(TP, 0, "Ledger", "ingress answered 503: scripted 503 (dead_letter_on)")
    ]


async def test_block_on_blocks_even_with_a_dead_letter_topic(
    ingress: FakeIngress, harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(routes=(route_config("Ledger", **statuses(block_on=[400])),))
    ingress.script("a", 400)
    h.send(0, "a")
    h.send(1, "a")
    h.send(2, "b")
    await until(lambda: h.blocked, bool, "blocked", timeout=3, interval=0.002)
    await h.finished_offsets(2)
    await asyncio.sleep(0.05)
    assert h.blocked == [Blocked(TP, 0, "Ledger", "ingress answered 400: scripted 400 (block_on)")]
    assert h.producer.sent == []  # nothing dead-lettered, though the topic exists
    assert [s.seq for s in ingress.requests("a")] == [0]
    assert h.dispatcher.busy == 2
    assert "the route's block_on names this answer" in caplog.text
    h.drop({TP})
    await idle(h)


async def _finish_times(h: Harness, ingress: FakeIngress, count: int) -> list[float]:
    await h.finished_offsets(*range(count), timeout=10)
    return sorted(s.at for s in ingress.seen)


async def test_a_rate_limit_spaces_the_sends_and_counts_the_waiting(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Ledger", rate_limit=50.0, rate_limit_burst=5),))
    started = time.monotonic()
    for n in range(20):
        h.send(n, f"k{n}")  # 20 keys: nothing but the rate holds them back
    times = await _finish_times(h, ingress, 20)
    assert times[-1] - started >= (20 - 5) / 50 * 0.95
    assert h.counter("restate_bridge_rate_limited_total", route="Ledger") == 15
    assert h.counter("restate_bridge_rate_limit_wait_seconds_total", route="Ledger") > 0
    gauge = "restate_bridge_rate_limit_records_per_second"
    assert h.counter(gauge, route="Ledger") == 50


async def test_a_rate_limit_keeps_per_key_order(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Ledger", rate_limit=200.0, rate_limit_burst=1),))
    for n in range(12):
        h.send(n, "ab"[n % 2])
    await h.finished_offsets(*range(12), timeout=10)
    assert ingress.applied["a"] == [0, 2, 4, 6, 8, 10]
    assert ingress.applied["b"] == [1, 3, 5, 7, 9, 11]
    assert ingress.overtakes == []


async def test_a_route_waiting_for_its_rate_holds_no_send_slot(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """One global slot; the slow route's records wait for tokens (seconds) without it, so the
    other route's records go at once."""
    h = harness(
        max_in_flight=1,
        routes=(route_config("Slow", rate_limit=0.5, rate_limit_burst=1), route_config("Fast")),
    )
    for n in range(3):
        h.send(n, f"s{n}", route="Slow")
    await h.finished_offsets(0)
    for n in range(10):
        h.send(100 + n, f"f{n}", route="Fast")
    await h.finished_offsets(*range(100, 110), timeout=1.5)  # long before Slow's 2nd token (2 s)
    assert {p.record.offset for p in h.finished} == {0, *range(100, 110)}
    h.drop({TP})
    await idle(h)


async def test_a_revoked_partition_stops_waiting_for_tokens_and_gives_them_back(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(routes=(route_config("Ledger", rate_limit=1.0, rate_limit_burst=1),))
    h.send(0, "a")
    await h.finished_offsets(0)
    h.send(1, "b")
    h.send(2, "c")  # both wait for tokens: 1 s and 2 s
    await asyncio.sleep(0.05)
    h.drop({TP})
    await idle(h)  # at once, not after the waits
    assert [s.seq for s in ingress.seen] == [0]
    bucket = h.dispatcher.limits.bucket("Ledger")
    assert bucket is not None
    assert bucket.tokens > -0.5  # the two unused reservations went back


async def test_configure_routes_again_keeps_what_did_not_change(harness: HarnessFactory) -> None:
    h = harness(
        routes=(
            route_config("A", max_in_flight=2, rate_limit=5.0),
            route_config("B", max_in_flight=3, rate_limit=7.0, **statuses(retry_on=[409])),
        )
    )
    limits = h.dispatcher.limits
    a_slots, b_slots = limits.route_slots("A"), limits.route_slots("B")
    a_bucket, b_bucket = limits.bucket("A"), limits.bucket("B")
    h.dispatcher.configure_routes(
        (
            route_config("A", max_in_flight=2, rate_limit=5.0),
            route_config("B", max_in_flight=4, rate_limit=8.0),
            route_config("C"),
        )
    )
    assert limits.route_slots("A") is a_slots
    assert limits.bucket("A") is a_bucket
    b_now = limits.route_slots("B")
    assert b_now is not b_slots
    assert b_now is not None
    assert b_now[0] == 4
    b_bucket_now = limits.bucket("B")
    assert b_bucket_now is not b_bucket
    assert b_bucket_now is not None
    assert b_bucket_now.rate == 8.0
    assert limits.policy_of("B") is limits.policy  # its retry_on is gone
    assert limits.routes_with_settings["slots"] == {"A", "B"}
    gauge = "restate_bridge_rate_limit_records_per_second"
    assert (h.counter(gauge, route="B"), h.counter(gauge, route="C")) == (8.0, 0.0)
    h.dispatcher.configure_routes((route_config("C"),))
    # removed routes keep their slots: invocations planned before the reload go as planned;
    # their rate limits are gone (a job waiting for tokens goes at once)
    assert limits.route_slots("A") is a_slots
    assert limits.routes_with_settings["slots"] == {"A", "B"}
    assert limits.routes_with_settings["buckets"] == set()
    registry = h.metrics.registry
    assert registry.get_sample_value(gauge, {"route": "A"}) is None  # a removed route's series
    assert registry.get_sample_value(gauge, {"route": "C"}) == 0.0


# -- operator controls: pauses and releases ---------------------------------------------------


async def settle(h: Harness, seconds: float = 0.05) -> None:
    """Give jobs time to do what they would do (and must not)."""
    await asyncio.sleep(seconds)


async def blocked(h: Harness, count: int = 1) -> None:
    await until(lambda: len(h.blocked), lambda n: n >= count, f"{count} blocked", 3, 0.002)


# -- pauses -----------------------------------------------------------------------------------


async def test_a_paused_route_waits_before_any_slot_and_resume_keeps_key_order(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(max_in_flight=1, routes=(route_config("Paused", max_in_flight=1),))
    h.set_paused({"Paused"}, ())
    for offset in range(6):
        h.send(offset, f"k{offset % 2}", route="Paused")
    h.send(10, "free", route="Free")
    h.send(11, "free", route="Free")
    # the other route's jobs go through the single global slot the waiting jobs do not take
    await h.finished_offsets(10, 11)
    await settle(h)
    assert [s.route for s in ingress.seen] == ["Free", "Free"]
    assert h.dispatcher.busy == 6
    assert h.dispatcher.unsettled({TP}) == 0  # a drain does not wait for them

    h.set_paused((), ())
    await h.finished_offsets(*range(6))
    assert ingress.applied["k0"] == [0, 2, 4]
    assert ingress.applied["k1"] == [1, 3, 5]
    assert ingress.overtakes == []
    assert len(ingress.seen) == 8  # each once
    await idle(h)


async def test_after_a_resume_a_keys_records_go_one_after_another_even_when_sends_are_slow(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    for key in ("k0", "k1"):  # the first send of each key is slow: a later one could overtake it
        ingress.script(key, Answer(wait=0.05), *[Answer(wait=0.005)] * 9)
    h.set_paused({"Ledger"}, ())
    for offset in range(20):
        h.send(offset, f"k{offset % 2}")
    await settle(h)
    assert ingress.seen == []
    h.set_paused((), ())
    await h.finished_offsets(*range(20))
    assert ingress.overtakes == []
    assert ingress.applied["k0"] == list(range(0, 20, 2))
    assert ingress.applied["k1"] == list(range(1, 20, 2))


async def test_a_send_under_way_finishes_when_its_route_is_paused_and_the_next_waits(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    gate = asyncio.Event()
    ingress.script("a", Answer(gate=gate))
    h.send(0, "a")
    h.send(1, "a")
    h.send(2, "b", lane=False)
    await until(lambda: ingress.requests("a"), bool, "the first send under way", 3, 0.002)
    await h.finished_offsets(2)
    h.set_paused({"Ledger"}, ())
    assert h.dispatcher.unsettled({TP}) == 2  # the send under way, and the job queued behind
    gate.set()
    await h.finished_offsets(0)
    await settle(h)
    assert [s.seq for s in ingress.requests("a")] == [0]
    assert h.dispatcher.unsettled({TP}) == 0
    h.set_paused((), ())
    await h.finished_offsets(1)
    assert ingress.applied["a"] == [0, 1]


async def test_a_retrying_job_makes_no_new_attempt_while_paused(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    ingress.script("a", *[503] * 3)
    h.send(0, "a")
    await until(lambda: len(ingress.requests("a")), lambda n: n >= 1, "a first attempt", 3, 0.002)
    h.set_paused({"Ledger"}, ())
    await settle(h, 0.2)  # several retry_max
    attempts = len(ingress.requests("a"))
    await settle(h, 0.2)
    assert len(ingress.requests("a")) == attempts
    assert h.finished == []
    h.set_paused((), ())
    await h.finished_offsets(0)
    assert ingress.applied["a"] == [0]


async def test_a_paused_topic_holds_its_records_jobs_and_only_theirs(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    other = TopicPartition("payments", 0)
    h.set_paused((), {"orders"})
    h.send(0, "a")
    h.send(5, "p", tp=other)
    await h.finished_offsets(5)
    await settle(h)
    assert ingress.requests("a") == []
    h.poison(1, "not JSON")  # a dead letter of a paused topic waits too
    await settle(h)
    assert h.producer.sent == []
    h.set_paused((), ())
    await h.finished_offsets(0, 1)
    assert len(h.producer.sent) == 1


async def test_a_waiting_job_ends_when_its_partition_is_revoked(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness()
    h.set_paused({"Ledger"}, ())
    h.send(0, "a")
    h.send(1, "a")
    await settle(h)
    h.drop({TP})
    await idle(h)
    h.set_paused((), ())
    await settle(h)
    assert ingress.seen == []
    assert h.finished == []


# -- releases ---------------------------------------------------------------------------------


async def test_retry_runs_a_blocked_job_again_and_a_second_failure_blocks_it_again(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("a", 400, 400)
    h.send(0, "a")
    h.send(1, "a")
    await blocked(h)
    assert [held.offset for held in h.held(TP)] == [0]
    assert h.dispatcher.unsettled({TP}) == 0

    released = await h.release(TP, "retry")
    assert [(r.offset, r.route) for r in released] == [(0, "Ledger")]
    await blocked(h, 2)  # fresh attempts, refused again: blocked again, visibly
    assert [s.seq for s in ingress.requests("a")] == [0, 0]

    await h.release(TP, "retry")
    await h.finished_offsets(0, 1)
    assert ingress.applied["a"] == [0, 1]
    assert h.outcome("accepted") == 2
    assert h.held(TP) == []
    await idle(h)


async def test_skip_finishes_the_blocked_record_after_prepare_and_its_key_goes_on(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("a", 422)
    h.send(0, "a")
    h.send(1, "a")
    await blocked(h)
    prepared: list[Held] = []

    async def prepare(helds: Sequence[Held]) -> None:
        prepared.extend(helds)
        assert h.finished == []  # nothing is finished before the record was parked

    await h.release(TP, "skip", prepare)
    await h.finished_offsets(0, 1)
    [held] = prepared
    assert held.records[0].offset == 0
    assert held.reason == "ingress answered 422: scripted 422"
    assert h.outcome("skipped") == 1
    assert h.outcome("accepted") == 1
    assert ingress.applied["a"] == [1]
    assert h.producer.sent == []


async def test_a_failing_prepare_releases_nothing_and_a_second_release_may_follow(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("a", 400)
    h.send(0, "a")
    await blocked(h)

    async def refuse(helds: Sequence[Held]) -> None:
        raise NotBlocked("the parking topic is gone")

    with pytest.raises(NotBlocked, match="parking topic"):
        await h.release(TP, "skip", refuse)
    await settle(h)
    assert h.finished == []
    assert len(h.held(TP)) == 1
    await h.release(TP, "retry")
    await h.finished_offsets(0)


async def test_a_release_takes_the_lowest_blocked_offset_and_refuses_a_concurrent_one(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("b", 400)
    ingress.script("a", 400)
    h.send(3, "b")
    await blocked(h)
    h.send(1, "a")
    await blocked(h, 2)
    assert [held.offset for held in h.held(TP)] == [1, 3]
    entered, go_on = asyncio.Event(), asyncio.Event()

    async def slow(helds: Sequence[Held]) -> None:
        entered.set()
        await go_on.wait()

    first = asyncio.create_task(h.release(TP, "skip", slow))
    await entered.wait()
    assert [held.offset for held in h.held(TP)] == [3]
    second = await h.release(TP, "retry")  # the next one is free to release
    assert [r.offset for r in second] == [3]
    with pytest.raises(NotBlocked, match="being released already"):
        await h.release(TP, "retry")
    go_on.set()
    assert [r.offset for r in await first] == [1]
    await h.finished_offsets(1, 3)
    with pytest.raises(NotBlocked, match="partition orders-0 is not blocked"):
        await h.release(TP, "retry")


async def test_a_skip_job_parks_then_finishes_and_a_failing_park_blocks(
    ingress: FakeIngress, harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(dead_letter=False)
    parked: list[int] = []
    failures = [RuntimeError("broker away")]

    def skip(offset: int) -> None:
        rec = Record(TP.topic, TP.partition, offset, 0, b"k", b"{}")
        pending = h.pending(rec)

        async def park() -> None:
            if failures:
                raise failures.pop()
            parked.append(offset)

        h.dispatcher.submit_skip(pending, "Ledger", park)

    with caplog.at_level(logging.WARNING):
        skip(7)
        await blocked(h)
    assert h.blocked[0].reason == "skip failed: RuntimeError: broker away"
    await h.release(TP, "retry")  # runs the park again
    await h.finished_offsets(7)
    assert parked == [7]
    assert h.outcome("skipped") == 1
    assert ingress.seen == []
    await idle(h)


async def test_a_blocked_job_still_ends_when_revoked_or_closed(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    h = harness(dead_letter=False)
    ingress.script("a", 400)
    h.send(0, "a")
    await blocked(h)
    h.drop({TP})
    await idle(h)
    assert h.held(TP) == []
    with pytest.raises(NotBlocked):
        await h.release(TP, "retry")


async def test_a_held_job_whose_release_is_under_way_holds_a_drain_up(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """A drain (a revocation) waits for a release that has begun (a skip being produced), so
    that the skipped record finishes and is committed before the partition goes."""
    h = harness(dead_letter=False)
    h.poison(0, "not JSON")
    await blocked(h)
    assert h.dispatcher.unsettled({TP}) == 0, "held for the operator: a drain does not wait"
    producing, produced = asyncio.Event(), asyncio.Event()

    async def prepare(helds: Sequence[Held]) -> None:
        producing.set()
        await produced.wait()

    release = asyncio.create_task(h.release(TP, "skip", prepare))
    await producing.wait()
    assert h.dispatcher.unsettled({TP}) == 1, "a release under way: the drain waits for it"
    produced.set()
    await release
    await h.finished_offsets(0)
    assert h.dispatcher.unsettled({TP}) == 0
