"""Proofs of delivery decisions: the 404 grace, dead-letter produce failures, topic_pattern."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaError

from bridge.ingress import Client
from tests.helpers import recorded, recorded_as, recorder, route, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, alter_topic, create_topics, produce, read_topic
from tests.stack.ledger import committed_offsets, outcome
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

pytestmark = pytest.mark.integration


def errors(bridge: BridgeProcess, reason: str) -> float:
    return bridge.value("restate_bridge_ingress_errors_total", reason=reason)


async def test_a_target_registered_within_the_grace_is_delivered_not_dead_lettered(
    broker: Broker, bridges: BridgeFactory, bare_restate: RestateServer, handlers: HandlerServer
) -> None:
    topic, dlq, key, group = unique("late"), unique("dlq"), unique("k"), unique("g")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    await produce(broker.bootstrap_servers, topic, [Message(key.encode(), b'"early"')])
    bridge = bridges.start(
        recorder(topic),
        group_id=group,
        ingress_url=bare_restate.ingress_url,
        dead_letter_topic=dlq,
        delivery='unknown_target_grace = "60s"',
    )
    # Recorder is not registered yet: the ingress answers 404, the bridge keeps retrying
    await until(lambda: errors(bridge, "http_404"), lambda n: n >= 2, "404s retried")
    assert bridge.committed(topic) == {}
    handlers.register_with(bare_restate)
    await until(lambda: outcome(bridge, topic, "accepted"), lambda n: n == 1, "delivered")
    async with Client(bare_restate.ingress_url) as client:
        await recorded_as(client, key, ["early"])
    assert outcome(bridge, topic, "dead_lettered") == 0
    await until(
        lambda: bridge.committed(topic),
        lambda c: c == {0: 1},
        "committed",
    )
    assert await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=1) == []


async def test_a_target_still_unknown_after_the_grace_is_dead_lettered_with_the_reason(
    broker: Broker, bridges: BridgeFactory
) -> None:
    topic, dlq, group = unique("gone"), unique("dlq"), unique("g")
    service = "Missing_" + unique("svc").replace("-", "_")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    bridge = bridges.start(
        route(name="nowhere", topic=topic, target="service", service=service, handler="run"),
        group_id=group,
        dead_letter_topic=dlq,
        delivery='unknown_target_grace = "2s"',
    )
    [sent] = await produce(
        broker.bootstrap_servers, topic, [Message(b"k", b'"v"', [("trace", b"t1")])]
    )
    [dead] = await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=30)
    headers = dict(dead.headers)
    assert (dead.key, dead.value, headers["trace"]) == (b"k", b'"v"', b"t1")
    assert b"404" in headers["bridge.error"], headers
    assert headers["bridge.route"] == b"nowhere"
    assert (headers["bridge.topic"], headers["bridge.offset"]) == (topic.encode(), b"0")
    # dead-lettered only once the grace was over, after several retries
    assert dead.timestamp - sent.timestamp >= 2000 - 50, (dead.timestamp, sent.timestamp)
    assert errors(bridge, "http_404") >= 3
    assert outcome(bridge, topic, "dead_lettered") == 1
    await until(
        lambda: bridge.committed(topic),
        lambda c: c == {0: 1},
        "committed past the dead letter",
    )


async def test_a_refused_dead_letter_is_retried_and_nothing_passes_it(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, dlq, group, key = unique("dlqfail"), unique("dlq"), unique("g"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    # one replica, two required in sync: every acks=all produce is refused (retriable), like
    # a dead-letter topic whose replicas are down
    await create_topics(broker.bootstrap_servers, [dlq], configs={"min.insync.replicas": "2"})
    try:
        await produce(broker.bootstrap_servers, dlq, [Message(b"probe", b"probe")], timeout=3)
    except KafkaError:
        pass  # refused, as wanted
    else:
        pytest.skip(f"{broker.name} accepts acks=all below min.insync.replicas: cannot refuse")
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(key.encode(), b"not json {"), Message(key.encode(), b'{"n": 1}')],
    )
    bridge = bridges.start(recorder(topic, body="{value.n}"), group_id=group, dead_letter_topic=dlq)
    await until(
        lambda: bridge.value("restate_bridge_dead_letter_errors_total"),
        lambda n: n >= 2,
        "the dead-letter produce refused and retried",
    )
    assert await committed_offsets(broker.bootstrap_servers, group, topic) == {}
    assert outcome(bridge, topic, "dead_lettered") == 0
    assert await recorded(client, key)() == [], "the next record of the key overtook the poison"

    await alter_topic(broker.bootstrap_servers, dlq, {"min.insync.replicas": "1"})
    [dead] = await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=30)
    assert dead.value == b"not json {"
    assert b"not JSON" in dict(dead.headers)["bridge.error"]
    await until(
        lambda: committed_offsets(broker.bootstrap_servers, group, topic),
        lambda c: c == {0: 2},
        "committed past both records",
    )
    await recorded_as(client, key, [1])
    assert outcome(bridge, topic, "dead_lettered") == 1


async def test_a_dead_letter_too_large_for_its_topic_goes_without_its_value(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, dlq, group, key = unique("dlqbig"), unique("dlq"), unique("g"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    await create_topics(broker.bootstrap_servers, [dlq], configs={"max.message.bytes": "2048"})
    big = b"not json " + b"x" * 8000
    try:
        await produce(broker.bootstrap_servers, dlq, [Message(b"probe", big)], timeout=5)
    except KafkaError:
        pass  # refused as too large, as wanted
    else:
        pytest.skip(f"{broker.name} does not enforce max.message.bytes on a topic")
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(key.encode(), big), Message(key.encode(), b'{"n": 1}')],
    )
    bridge = bridges.start(recorder(topic, body="{value.n}"), group_id=group, dead_letter_topic=dlq)
    [dead] = await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=30)
    headers = dict(dead.headers)
    assert dead.key == key.encode()
    assert dead.value is None
    assert headers["bridge.original_value_size"] == str(len(big)).encode()
    assert headers["bridge.value_dropped"]
    assert b"not JSON" in headers["bridge.error"]
    await until(
        lambda: committed_offsets(broker.bootstrap_servers, group, topic),
        lambda c: c == {0: 2},
        "committed past both records",
    )
    await recorded_as(client, key, [1])
    assert outcome(bridge, topic, "dead_lettered") == 1
    assert bridge.value("restate_bridge_dead_letter_errors_total") >= 1


def pattern_route(prefix: str) -> str:
    return route(
        name="pat",
        topic_pattern=prefix + r"-a\d",
        target="object",
        service="Recorder",
        handler="record",
        key="{topic}",
    )


async def test_topic_pattern_is_a_full_match(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    prefix = unique("pat")
    matching = [f"{prefix}-a1", f"{prefix}-a2"]
    others = [f"x{prefix}-a1", f"{prefix}-a1-suffix", f"{prefix}-b1"]
    await create_topics(broker.bootstrap_servers, [*matching, *others])
    for t in [*matching, *others]:
        await produce(broker.bootstrap_servers, t, [Message(None, b'"v"')])
    bridge = bridges.start(pattern_route(prefix), group_id=unique("g"))
    for t in matching:
        await until(recorded(client, t), lambda got: got == ["v"], f"{t} consumed")
    await until(
        lambda: bridge.committed(matching[1]),
        lambda c: c == {0: 1},
        "the matching topics committed",
    )
    for t in others:
        assert await recorded(client, t)() == [], t
        assert bridge.samples("restate_bridge_messages_total", topic=t) == [], t
        assert bridge.samples("restate_bridge_consumer_lag", topic=t) == [], t


async def test_topic_pattern_picks_up_a_topic_created_after_the_start(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    prefix = unique("pat")
    first, later = f"{prefix}-a1", f"{prefix}-a2"
    await create_topics(broker.bootstrap_servers, [first])
    bridges.start(pattern_route(prefix), group_id=unique("g"))
    await create_topics(broker.bootstrap_servers, [later])
    await produce(broker.bootstrap_servers, later, [Message(None, b'"after"')])
    await until(
        recorded(client, later), lambda got: got == ["after"], "a topic created later", timeout=20
    )
