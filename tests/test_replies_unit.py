"""Reply routes without a broker: the reply record, the decisions, the config rules, and the
dispatcher's waiting part against a fake ingress (real HTTP through ``bridge.ingress.Client``)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from bridge.config import ConfigError, DeliveryConfig, parse_config
from bridge.core.record import Record
from bridge.core.routing import Invocation, ReplyTo, Router
from bridge.deliver.decisions import (
    GiveUp,
    Policy,
    Retry,
    after_attach_failure,
    after_reply_failure,
    wait_exceeded,
)
from bridge.deliver.dispatcher import Dispatcher
from bridge.deliver.health import IngressHealth
from bridge.ingress import Client, ConnectError, IngressTimeout, InvocationError, ResponseError
from bridge.operate.metrics import Metrics
from bridge.sinks.deadletter import DeadLetterSink
from bridge.sinks.replies import (
    Failed,
    Reply,
    ReplySink,
    ReplyTopicMissing,
    Succeeded,
    reply_message,
)
from tests.fakes import FakeBook
from tests.helpers import until

RECORD = Record("asks", 3, 41, 0, b"k1", b'{"name": "Ada"}', (("correlation-id", b"c-9"),))
POLICY = Policy()


# -- the reply record ---------------------------------------------------------------------------


def test_a_reply_carries_the_output_the_source_key_and_the_bridge_headers() -> None:
    msg = reply_message(Reply(RECORD, "answers", "inv_1", Succeeded(b'"hi"'), "correlation-id"))
    assert msg.key == b"k1"
    assert msg.value == b'"hi"'
    assert msg.headers == [
        ("bridge.status", b"ok"),
        ("bridge.invocation_id", b"inv_1"),
        ("bridge.topic", b"asks"),
        ("bridge.partition", b"3"),
        ("bridge.offset", b"41"),
        ("correlation-id", b"c-9"),
    ]


def test_an_error_reply_has_no_value_and_says_code_and_message() -> None:
    msg = reply_message(Reply(RECORD, "answers", "inv_1", Failed(400, "no such user")))
    assert msg.value == b""
    headers = dict(msg.headers)
    assert headers["bridge.status"] == b"error"
    assert headers["bridge.error_code"] == b"400"
    assert headers["bridge.error"] == b"no such user"
    assert "correlation-id" not in headers  # the route names no correlation header


def test_a_correlation_header_the_record_lacks_is_left_out() -> None:
    bare = Record("asks", 0, 1, 0, None, b"{}", ())
    msg = reply_message(Reply(bare, "answers", "inv_2", Succeeded(b""), "correlation-id"))
    assert [k for k, _ in msg.headers] == [
        "bridge.status",
        "bridge.invocation_id",
        "bridge.topic",
        "bridge.partition",
        "bridge.offset",
    ]
    assert msg.key is None
    assert msg.value == b""


# -- decisions ----------------------------------------------------------------------------------


def attach_decision(error: Exception, now: float = 10.0, deadline: float = 300.0) -> Any:
    return after_attach_failure(error, 0, now, deadline, 300.0, "inv_7", POLICY, random.Random(1))


def test_the_wait_exceeded_reason_names_the_wait_and_the_invocation() -> None:
    assert wait_exceeded(300, "inv_7") == (
        "no result within 5m; the invocation inv_7 keeps running in Restate"
    )
    assert wait_exceeded(1.5, "inv_8").startswith("no result within 1s500ms;")


def test_a_terminal_handler_error_is_replied() -> None:
    error = InvocationError(400, "nope", code=409, source="invocation")
    assert attach_decision(error) == Failed(409, "nope")
    without_code = InvocationError(422, "bad", source="invocation")
    assert attach_decision(without_code) == Failed(422, "bad")
    # even past the deadline: the result is known
    assert attach_decision(error, now=400.0) == Failed(409, "nope")


@pytest.mark.parametrize(
    "error",
    [ConnectError("refused"), IngressTimeout("slow"), ResponseError(503, "down")],
    ids=["connect", "timeout", "503"],
)
def test_transient_attach_failures_are_retried_until_the_deadline(error: Exception) -> None:
    decision = attach_decision(error, now=299.99)
    assert isinstance(decision, Retry)
    assert decision.delay <= 0.01 + 1e-9  # never sleeps past the deadline
    assert decision.label == f"attach_{error.reason}"  # type: ignore[attr-defined]
    late = attach_decision(error, now=300.0)
    assert late == GiveUp(wait_exceeded(300.0, "inv_7"), "reply_timeout")


def test_our_own_deadline_gives_up_with_the_timeout_reason() -> None:
    decision = attach_decision(TimeoutError(), now=301.0)
    assert isinstance(decision, GiveUp)
    assert decision.label == "reply_timeout"
    assert not decision.unexpected


def test_an_unknown_invocation_and_a_bug_give_up() -> None:
    gone = attach_decision(ResponseError(404, "not found", source="ingress"))
    assert gone == GiveUp(
        "attaching to inv_7: ingress answered 404 (ingress): not found", "attach_http_404"
    )
    bug = attach_decision(ValueError("x"))
    assert isinstance(bug, GiveUp)
    assert bug.unexpected
    assert bug.label == "internal"


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (ReplyTopicMissing("answers"), "topic_missing"),
        (KafkaConnectionError(), "produce"),
        (KafkaTimeoutError(), "produce"),
    ],
)
def test_a_reply_that_cannot_be_produced_yet_is_retried(error: Exception, label: str) -> None:
    for attempt in (0, 50):
        decision = after_reply_failure(error, attempt, POLICY, random.Random(1))
        assert isinstance(decision, Retry)
        assert decision.label == label
        assert decision.attempts.count == attempt + 1


def test_a_reply_refused_for_good_gives_up() -> None:
    refused = after_reply_failure(MessageSizeTooLargeError(), 0, POLICY)
    assert isinstance(refused, GiveUp)
    assert refused.label == "produce_refused"
    assert refused.reason.startswith("the reply could not be produced: MessageSizeTooLargeError")
    bug = after_reply_failure(RuntimeError("x"), 0, POLICY)
    assert isinstance(bug, GiveUp)
    assert bug.unexpected


def test_the_missing_topic_message_names_the_topic() -> None:
    assert str(ReplyTopicMissing("answers")) == (
        "reply topic 'answers' does not exist; create it (the bridge retries, nothing is lost)"
    )


# -- config and routing -------------------------------------------------------------------------

KAFKA = '[kafka]\nbootstrap_servers = "k:9092"\n'


def config(text: str) -> Any:
    return parse_config(KAFKA + text, Path("routes.toml"), {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(text)
    return caught.value.problems


def reply_route(extra: str = "", *, target: str = "service", handler: str = "h") -> str:
    key = 'key = "{key}"\n' if target != "service" else ""
    return (
        f'[[routes]]\ntopic = "asks"\ntarget = "{target}"\nservice = "S"\nhandler = "{handler}"\n'
        f'{key}reply_topic = "answers"\n{extra}'
    )


def test_reply_options_reach_the_invocation() -> None:
    cfg = config(
        '[delivery]\nreply_timeout = "90s"\nmax_waiting_replies = 7\n'
        + reply_route('reply_correlation_header = "correlation-id"\n')
        + reply_route('name = "own"\nreply_timeout = "10s"\n', target="workflow", handler="run")
    )
    assert cfg.delivery.max_waiting_replies == 7
    [first, second] = Router(cfg).plan(RECORD)
    assert isinstance(first, Invocation)
    assert isinstance(second, Invocation)
    assert first.reply == ReplyTo("answers", "correlation-id", 90.0)
    assert second.reply == ReplyTo("answers", None, 10.0)
    assert second.idempotency_key is None  # a workflow's run: the workflow id is its idempotency


def test_reply_defaults() -> None:
    cfg = config(reply_route())
    assert cfg.delivery.max_waiting_replies == 1024
    assert cfg.delivery.reply_timeout == timedelta(minutes=5)
    [inv] = Router(config(reply_route().replace('reply_topic = "answers"\n', ""))).plan(RECORD)
    assert isinstance(inv, Invocation)
    assert inv.reply is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            reply_route().replace('"answers"', '"asks"'),
            "routes.toml:8: reply_topic 'asks' is read by route 'S.h': every reply would be "
            "routed again (a loop); reply to a topic no route reads",
        ),
        (
            '[dead_letter]\ntopic = "answers"\n' + reply_route(),
            "routes.toml:10: reply_topic 'answers' is the dead-letter topic; "
            "use a topic of its own",
        ),
        (
            reply_route('idempotency_key = "none"\n'),
            "routes.toml:9: a reply route needs an idempotency key: Restate keeps the result of an "
            "invocation made without one only while it runs, so the reply could not be fetched "
            "after it completed or after a restart; remove idempotency_key = 'none'",
        ),
        (
            reply_route('reply_correlation_header = "has space"\n'),
            "routes.toml:9: 'has space' is not a header name: 1 to 255 visible ASCII characters, "
            "no spaces (for example 'correlation-id')",
        ),
        (
            reply_route('reply_correlation_header = "bridge.status"\n'),
            "routes.toml:9: 'bridge.status': header names starting with 'bridge.' are the "
            "bridge's own reply headers",
        ),
        (
            reply_route().replace('reply_topic = "answers"\n', 'reply_timeout = "1m"\n'),
            "routes.toml:8: reply_timeout is only used with reply_topic",
        ),
        (
            reply_route('reply_topic = "a b"\n').replace('reply_topic = "answers"\n', ""),
            "routes.toml:8: 'a b' is not a Kafka topic name (1 to 249 of the characters "
            "a-z A-Z 0-9 . _ -)",
        ),
        (
            reply_route('delay = "10m"\n'),
            "routes.toml:9: delay 600s is not shorter than the reply wait (300s, reply_timeout): "
            "every reply would time out",
        ),
        (
            "[delivery]\nmax_waiting_replies = 0\n" + reply_route(),
            "routes.toml:4: 'max_waiting_replies' must be a positive integer",
        ),
    ],
    ids=[
        "loop",
        "dead-letter-topic",
        "no-idempotency",
        "bad-header",
        "bridge-header",
        "timeout-without-topic",
        "bad-topic",
        "delay-beyond-wait",
        "zero-slots",
    ],
)
def test_reply_config_mistakes(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# -- the dispatcher's waiting part ---------------------------------------------------------------


@dataclass
class FakeRestate:
    """``/send`` answers 202 with ``inv_<key>``; ``attach`` waits for that key's gate and then
    answers with its scripted statuses (then 200 and the output)."""

    url: str = ""
    gates: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    attach_script: dict[str, deque[int]] = field(default_factory=lambda: defaultdict(deque))
    sent: list[str] = field(default_factory=list)
    attaching: set[str] = field(default_factory=set)

    async def send(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.sent.append(key)
        body = {"invocationId": f"inv_{key}", "status": "Accepted"}
        return web.json_response(body, status=202)

    async def attach(self, request: web.Request) -> web.Response:
        key = request.match_info["id"].removeprefix("inv_")
        self.attaching.add(key)
        try:
            await self.gates[key].wait()
        finally:
            self.attaching.discard(key)
        if self.attach_script[key]:
            status = self.attach_script[key].popleft()
            if status == 400:
                body = {"code": 400, "message": f"{key} failed", "source": "invocation"}
                return web.json_response(body, status=400)
            return web.json_response({"message": "busy"}, status=status)
        return web.json_response({"echo": key})


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})


@pytest.fixture
async def restate() -> AsyncIterator[FakeRestate]:
    fake = FakeRestate()
    app = web.Application()
    app.router.add_post("/{service}/{key}/{handler}/send", fake.send)
    app.router.add_get("/restate/invocation/{id}/attach", fake.attach)
    server = TestServer(app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    for gate in fake.gates.values():
        gate.set()
    await server.close()


@dataclass
class Waiting:
    dispatcher: Dispatcher
    metrics: Metrics
    producer: FakeProducer
    dead: FakeProducer
    topics: set[str]
    book: FakeBook

    @property
    def finished(self) -> list[int]:
        return [p.record.offset for p in self.book.done]

    def submit(self, offset: int, key: str, *, lane: str | None = None, wait: float = 5.0) -> None:
        record = Record("asks", 0, offset, 0, key.encode(), b"{}", ())
        pending = self.book.pending(record)
        reply = ReplyTo("answers", None, wait) if wait else None
        inv = Invocation(
            "r",
            "object",
            "Recorder",
            "record",
            key,
            b"{}",
            "application/json",
            None,
            f"idem-{offset}",
            lane=(lane or key,),
            reply=reply,
        )
        self.dispatcher.submit(pending, inv)


@pytest.fixture
async def waiting(restate: FakeRestate) -> AsyncIterator[Any]:
    made: list[tuple[Dispatcher, Client]] = []

    def make(*, max_in_flight: int = 8, max_waiting_replies: int = 8) -> Waiting:
        client = Client(restate.url, timeout=5.0)
        metrics = Metrics()
        health = IngressHealth(metrics)
        producer, dead, topics = FakeProducer(), FakeProducer(), {"answers"}

        async def cluster_topics() -> set[str]:
            return set(topics)

        book = FakeBook()
        dispatcher = Dispatcher(
            client=client,
            metrics=metrics,
            health=health,
            delivery=DeliveryConfig(
                max_in_flight=max_in_flight,
                max_waiting_replies=max_waiting_replies,
                retry_initial=timedelta(milliseconds=1),
                retry_max=timedelta(milliseconds=20),
            ),
            outcomes=book,
            pauses=book.controls,
            dead_letters=DeadLetterSink(dead, "dlq"),
            request_timeout=5.0,
            replies=ReplySink(producer, cluster_topics),
        )
        made.append((dispatcher, client))
        return Waiting(dispatcher, metrics, producer, dead, topics, book)

    yield make
    for dispatcher, client in made:
        await dispatcher.aclose()
        await client.aclose()


async def test_the_lane_goes_on_at_the_202_and_the_record_finishes_after_its_reply(
    restate: FakeRestate, waiting: Any
) -> None:
    w: Waiting = waiting()
    w.submit(0, "a", lane="one")
    w.submit(1, "b", lane="one")  # same lane: sent while the first one waits for its result
    await until(lambda: set(restate.attaching), lambda s: s == {"a", "b"}, "both waiting")
    assert restate.sent == ["a", "b"]
    assert w.finished == []
    assert w.metrics.waiting_replies._value.get() == 2
    restate.gates["b"].set()
    await until(lambda: w.finished, lambda f: f == [1], "b finished", 3)
    [produced] = w.producer.sent
    assert produced["value"] == b'{"echo": "b"}'  # byte for byte, as the ingress sent it
    assert dict(produced["headers"])["bridge.invocation_id"] == b"inv_b"
    restate.gates["a"].set()
    await until(lambda: w.finished, lambda f: f == [1, 0], "a finished", 3)
    assert w.metrics.waiting_replies._value.get() == 0
    assert w.dispatcher.busy == 0


async def test_a_waiting_reply_holds_a_reply_slot_not_a_send_slot(
    restate: FakeRestate, waiting: Any
) -> None:
    w: Waiting = waiting(max_in_flight=1, max_waiting_replies=2)
    for offset, key in enumerate(["a", "b", "c"]):
        w.submit(offset, key)
    w.submit(3, "plain", wait=0)  # no reply: needs only the one send slot
    await until(lambda: len(restate.sent), lambda n: n == 3, "a, b and the plain one sent", 3)
    assert "c" not in restate.sent  # no reply slot left
    await until(lambda: w.finished, lambda f: f == [3], "the plain record finished", 3)
    restate.gates["a"].set()
    await until(lambda: "c" in restate.sent, bool, "c sent once a's reply was produced", 3)
    for key in ("b", "c"):
        restate.gates[key].set()
    await until(lambda: sorted(w.finished), lambda f: f == [0, 1, 2, 3], "all finished", 3)


async def test_transient_attach_errors_are_retried_and_a_terminal_error_is_replied(
    restate: FakeRestate, waiting: Any
) -> None:
    w: Waiting = waiting()
    restate.attach_script["a"].extend([503, 503])
    restate.attach_script["b"].append(400)
    for key in ("a", "b"):
        restate.gates[key].set()
    w.submit(0, "a")
    w.submit(1, "b")
    await until(lambda: sorted(w.finished), lambda f: f == [0, 1], "both finished", 3)
    by_key = {m["key"]: m for m in w.producer.sent}
    assert by_key[b"a"]["value"] == b'{"echo": "a"}'
    assert dict(by_key[b"b"]["headers"])["bridge.error"] == b"b failed"
    assert by_key[b"b"]["value"] == b""
    sample = w.metrics.registry.get_sample_value
    assert (
        sample("restate_bridge_reply_errors_total", {"route": "r", "reason": "attach_http_5xx"})
        == 2
    )
    assert sample("restate_bridge_replies_total", {"route": "r", "status": "error"}) == 1


async def test_past_the_maximum_wait_the_record_is_dead_lettered(
    restate: FakeRestate, waiting: Any
) -> None:
    w: Waiting = waiting()
    w.submit(0, "slow", wait=0.2)
    await until(lambda: w.finished, lambda f: f == [0], "dead-lettered", 3)
    assert w.producer.sent == []
    [letter] = w.dead.sent
    assert dict(letter["headers"])["bridge.error"] == (
        b"no result within 200ms; the invocation inv_slow keeps running in Restate"
    )
    assert w.metrics.waiting_replies._value.get() == 0


async def test_a_missing_reply_topic_keeps_the_record_unfinished_until_it_exists(
    restate: FakeRestate, waiting: Any
) -> None:
    w: Waiting = waiting()
    w.topics.clear()
    restate.gates["a"].set()
    w.submit(0, "a")
    await until(
        lambda: dict(w.dispatcher.missing_reply_topics),
        lambda m: m == {"answers": 1},
        "the missing topic reported",
        3,
    )
    await asyncio.sleep(0.1)
    assert w.finished == []
    assert w.producer.sent == []
    w.topics.add("answers")
    await until(lambda: w.finished, lambda f: f == [0], "finished once the topic exists", 3)
    assert w.dispatcher.missing_reply_topics == {}
    assert len(w.producer.sent) == 1
