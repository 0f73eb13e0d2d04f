"""A hostile topic: adversarial records interleaved with good ones on the same object keys.

One bridge process reads it and must never exit. Good records reach their ``Recorder`` object once
each, in offset order; every bad record is dead-lettered with a reason that names what was wrong
(or applied, where the bridge can make a valid request of it); every partition is committed to its
end. The aborted-transaction case runs where transactions exist (Apache Kafka).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.ingress import Client
from tests.helpers import recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 2
GOOD_KEYS = ("alpha", "beta", "a/b:c %?#ü", "delta")


@dataclass
class Bad:
    """A hostile record and what its dead letter's ``bridge.error`` must mention."""

    message: Message
    mentions: tuple[str, ...]
    tag: bytes


def keyed(key: str, value: Any, kind: str, **headers: bytes) -> Message:
    """A record on ``key``'s fixed partition, so good and bad records of a key share a lane."""
    return Message(
        key.encode(),
        json.dumps(value).encode(),
        [("kind", kind.encode()), *headers.items()],
        partition=GOOD_KEYS.index(key) % PARTITIONS if key in GOOD_KEYS else 0,
    )


def hostile_routes(topic: str, prefix: str) -> str:
    def by_kind(name: str, kind: str, key: str = f"{prefix}{{key}}", **fields: object) -> str:
        return recorder(topic, name=name, key=key, match={"header.kind": kind}, **fields)

    return (
        by_kind("plain", "plain", headers=["trace"], on_null="dead_letter")
        + by_kind("delayed", "delayed", delay="{header.delay}")
        + by_kind("hex", "hex", key=f"{prefix}hex-{{key.hex}}")
        + by_kind("by-field", "field", key="{value.who}")
        + by_kind("skip-null", "tomb", on_null="skip")
    )


def hostile_records() -> tuple[list[Message], list[Bad]]:
    """Good and bad records, interleaved; the bad ones carry a ``bad`` header naming them."""
    good: list[Message] = []
    bad: list[Bad] = []

    def add_bad(message: Message, *mentions: str) -> None:
        tag = f"bad-{len(bad)}".encode()
        message.headers = [*message.headers, ("bad", tag)]
        bad.append(Bad(message, mentions, tag))
        good.append(message)  # produced in this position, among the good ones

    n = 0
    for round_ in range(3):
        for key in GOOD_KEYS:
            good.append(keyed(key, {"n": n}, "plain", trace=b"t-%d" % n))
            n += 1
            good.append(keyed(key, {"n": n}, "delayed", delay=b"0s"))
            n += 1
        alpha, beta = GOOD_KEYS[0], GOOD_KEYS[1]
        if round_ == 0:
            add_bad(keyed(alpha, {"n": -1}, "delayed", delay=b"1000000000d"), "delay")
            add_bad(keyed(beta, {"n": -1}, "delayed", delay=b"-5s"), "delay")
            add_bad(keyed(alpha, {"n": -1}, "delayed", delay=b"400d"), "delay")
            add_bad(keyed(beta, {"n": -1}, "delayed", delay=b"9" * 400 + b"s"), "delay")
        elif round_ == 1:
            add_bad(keyed(alpha, {"n": -1}, "plain", trace=b"x\r\nX-Injected: 1"), "trace")
            add_bad(keyed(beta, {"n": -1}, "plain", trace=b"nul\x00byte"), "trace")
            add_bad(keyed(alpha, {"n": -1}, "plain", trace="ünï".encode()), "trace")
            add_bad(
                Message(b"\xff\xfe\x00", b'{"n": -1}', [("kind", b"plain")], partition=0),
                "key",
                "key.hex",
            )
            add_bad(Message(b"x" * 20_000, b'{"n": -1}', [("kind", b"plain")], partition=1), "key")
        else:
            add_bad(Message(alpha.encode(), None, [("kind", b"plain")], partition=0), "null")
            add_bad(Message(b"k", b"not json", [("kind", b"field")], partition=1), "JSON")
            add_bad(
                Message(b"k", b"[" * 5000 + b"]" * 5000, [("kind", b"field")], partition=0), "JSON"
            )
            add_bad(Message(b"k", b'{"who": ""}', [("kind", b"field")], partition=1), "key")
    return good, bad


async def produce_nothing_record(bootstrap: str, topic: str, tag: bytes) -> None:
    """A record with neither key nor value (Java producers can write one; aiokafka's ``send``
    refuses, its batch API does not)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        headers = [("kind", b"plain"), ("bad", tag)]
        batch.append(key=None, value=None, timestamp=None, headers=headers)
        fut = await producer.send_batch(batch, topic, partition=1)
        await fut
    finally:
        await producer.stop()


def expected_states(messages: list[Message], prefix: str) -> dict[str, list[Any]]:
    """What each Recorder key must hold: the good records' values, in produce (offset) order."""
    out: dict[str, list[Any]] = {}
    for m in messages:
        headers = dict(m.headers)
        if "bad" in headers:
            continue
        assert m.key is not None
        assert m.value is not None
        out.setdefault(prefix + m.key.decode(), []).append(json.loads(m.value))
    return out


async def test_hostile_topic_never_stops_the_bridge(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, dlq, prefix = unique("hostile"), unique("hostile-dlq"), unique("h") + "-"
    bootstrap = broker.bootstrap_servers
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    await create_topics(bootstrap, [dlq])
    messages, bad = hostile_records()
    # applied, not dead-lettered: a non-UTF-8 key through {key.hex}, a tombstone a route skips
    applied = [
        Message(b"\xff\xfe\x00", b'{"n": "hex"}', [("kind", b"hex")], partition=0),
        Message(b"gone", None, [("kind", b"tomb")], partition=1),
    ]
    await produce(bootstrap, topic, messages[: len(messages) // 2])
    bridge = bridges.start(
        hostile_routes(topic, prefix), group_id=unique("g"), dead_letter_topic=dlq
    )
    await produce_nothing_record(bootstrap, topic, b"bad-nothing")
    await produce(bootstrap, topic, [*messages[len(messages) // 2 :], *applied])

    expected = expected_states(messages, prefix)
    expected[f"{prefix}hex-fffe00"] = [{"n": "hex"}]
    keys = sorted(expected)

    async def states() -> dict[str, Any]:
        return {k: await client.object("Recorder", k, "get").request() for k in keys}

    await until(states, lambda s: s == expected, "every good record applied once, in order")

    dead = await read_topic(bootstrap, dlq, expect=len(bad) + 1, timeout=60)
    by_tag = {dict(d.headers).get("bad"): d for d in dead}
    assert len(dead) == len(bad) + 1, [dict(d.headers).get("bad") for d in dead]
    for case in bad:
        letter = by_tag.get(case.tag)
        assert letter is not None, f"{case.tag!r} was not dead-lettered"
        reason = dict(letter.headers)["bridge.error"].decode()
        for word in case.mentions:
            assert word.lower() in reason.lower(), f"{case.tag!r}: {reason!r} lacks {word!r}"
        assert letter.key == case.message.key
        if case.message.value is not None:
            assert letter.value == case.message.value
    nothing = by_tag[b"bad-nothing"]
    assert nothing.key is not None or nothing.value is not None  # a record Kafka accepts

    # never exited, still ready, and every partition committed to its end
    assert bridge.process.proc is not None
    assert bridge.process.proc.poll() is None
    assert bridge.ready()
    ends = await end_offsets(bootstrap, topic)
    await until(
        lambda: bridge.committed(topic),
        lambda c: c == ends,
        f"committed offsets at the partition ends {ends}",
    )
    skipped = bridge.metric('restate_bridge_messages_total{outcome="skipped",route="skip-null"')
    assert skipped == 1


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end, from a fetch high watermark (tansu's ListOffsets(latest) is wrong)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[int, int] = {}
        for _ in range(100):
            await consumer.getmany(timeout_ms=100)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None:
                    ends[tp.partition] = high
            if len(ends) == PARTITIONS:
                break
        return ends
    finally:
        await consumer.stop()


async def test_aborted_transactions_never_reach_restate(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    if broker.name != "apache-kafka":
        pytest.skip("transactions: the aborted-transaction case runs on Apache Kafka")
    topic, key = unique("txn"), unique("txn-key")
    bootstrap = broker.bootstrap_servers
    await create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx"))
    await producer.start()
    try:
        await producer.begin_transaction()
        for i in range(3):
            await producer.send_and_wait(topic, json.dumps(f"aborted-{i}").encode(), key.encode())
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b'"committed"', key.encode())
    except KafkaError as exc:  # pragma: no cover - a broker without transactions
        pytest.fail(f"transactions failed on {broker.name}: {exc}")
    finally:
        await producer.stop()
    await produce(bootstrap, topic, [Message(key.encode(), b'"plain"')])
    routes = recorder(topic)
    bridge = bridges.start(routes, group_id=unique("g"))

    async def state() -> Any:
        return await client.object("Recorder", key, "get").request()

    await until(state, lambda s: s == ["committed", "plain"], "only committed records applied")
    assert bridge.metric('restate_bridge_messages_total{outcome="accepted"') == 2
