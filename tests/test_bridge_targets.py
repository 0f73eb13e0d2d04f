"""The bridge end to end: Kafka records in, Restate invocations out, per target kind."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from bridge.ingress import Client
from tests.helpers import (
    messages_total,
    recorded,
    recorded_as,
    recorder,
    route,
    signup_workflow,
    unique,
    until,
)
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


async def test_object_route_keeps_per_key_order(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, tag = unique("ledger"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic], partitions=4)
    keys = [f"{tag}-{i}" for i in range(5)]
    messages = [Message(keys[i % 5].encode(), json.dumps({"n": i}).encode()) for i in range(100)]
    await produce(broker.bootstrap_servers, topic, messages)
    bridge = bridges.start(
        f"""
[[routes]]
name = "ledger"
topic = "{topic}"
target = "object"
service = "Recorder"
handler = "record"
key = "{{key}}"
""",
        group_id=unique("g"),
    )
    for k, key in enumerate(keys):
        expected = [{"n": i} for i in range(k, 100, 5)]
        await recorded_as(client, key, expected)
    samples = bridge.metrics()
    accepted = f'restate_bridge_messages_total{{outcome="accepted",route="ledger",topic="{topic}"}}'
    assert samples[accepted] == 100


async def test_content_routing_fan_out_and_keys_from_header_and_json(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, tag = unique("events"), unique("acct")
    await create_topics(broker.bootstrap_servers, [topic])
    routes = (
        recorder(
            topic,
            name="credits",
            key=f"{tag}-{{header.account}}",
            match={"header.kind": "credit"},
            body="{value.amount}",
        )
        + recorder(topic, name="audit", key=f"{tag}-audit", match={"header.kind": "credit"})
        + recorder(
            topic, name="orders", key=f"{tag}-{{value.customer.id}}", match={"value.type": "order"}
        )
    )
    msgs = [
        Message(b"x", b'{"amount": 5}', [("kind", b"credit"), ("account", b"a1")]),
        Message(b"x", b'{"amount": 7}', [("kind", b"debit"), ("account", b"a1")]),
        Message(b"x", b'{"type": "order", "customer": {"id": "c9"}, "n": 1}'),
        Message(b"x", b'{"type": "refund", "customer": {"id": "c9"}}'),
        Message(b"x", b'{"amount": 3}', [("kind", b"credit"), ("account", b"a1")]),
    ]
    await produce(broker.bootstrap_servers, topic, msgs)
    bridge = bridges.start(routes, group_id=unique("g"))
    await recorded_as(client, f"{tag}-a1", [5, 3])
    await recorded_as(client, f"{tag}-audit", [{"amount": 5}, {"amount": 3}])
    await recorded_as(client, f"{tag}-c9", [{"type": "order", "customer": {"id": "c9"}, "n": 1}])
    samples = bridge.metrics()
    assert messages_total(samples, topic, "credits", "accepted") == 2
    assert messages_total(samples, topic, "audit", "accepted") == 2
    assert messages_total(samples, topic, "orders", "accepted") == 1
    assert messages_total(samples, topic, "", "unrouted") == 2  # the debit and the refund


@pytest.mark.parametrize("key", ["a/b", "with space", "ünï"])
async def test_odd_kafka_keys_reach_the_object_unchanged(
    broker: Broker, bridges: BridgeFactory, client: Client, key: str
) -> None:
    topic = unique("odd")
    object_key = f"{key}-{uuid.uuid4().hex[:6]}"
    await create_topics(broker.bootstrap_servers, [topic])
    await produce(broker.bootstrap_servers, topic, [Message(object_key.encode(), b'"v"')])
    bridges.start(
        route(topic=topic, target="object", service="Recorder", handler="record", key="{key}"),
        group_id=unique("g"),
    )
    await recorded_as(client, object_key, ["v"])
    assert await client.object("Recorder", object_key, "key").request() == object_key


async def test_service_route_and_forwarded_headers(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    topic, tag = unique("svc"), unique("hdr")
    await create_topics(broker.bootstrap_servers, [topic])
    routes = route(
        name="greet",
        topic=topic,
        target="service",
        service="Greeter",
        handler="greet",
        body="{value.name}",
    ) + route(
        name="trace",
        topic=topic,
        target="object",
        service="Recorder",
        handler="recordHeaders",
        key=tag,
        headers=["x-trace", "x-absent"],
    )
    headers = [("x-trace", b"trace-1"), ("x-secret", b"not forwarded")]
    await produce(broker.bootstrap_servers, topic, [Message(None, b'{"name": "Ada"}', headers)])
    bridges.start(routes, group_id=unique("g"))

    got: Any = await until(recorded(client, tag), bool, "the header record arriving", 30)
    assert len(got) == 1
    assert got[0]["value"] == {"name": "Ada"}
    assert got[0]["headers"]["x-trace"] == "trace-1"
    assert "x-secret" not in got[0]["headers"]
    # the service invocation ran with the JSON sub-document as its input
    rows = restate.query(
        "select count(*) as n from sys_invocation where target = 'Greeter/greet' "
        "and status = 'completed' and idempotency_key like '" + topic + "-%'"
    )
    assert rows[0]["n"] == 1


async def test_workflow_route_runs_once_per_workflow_id(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, wf = unique("signups"), unique("wf")
    await create_topics(broker.bootstrap_servers, [topic])
    value = json.dumps({"user": wf, "email": "ada@example.com"}).encode()
    await produce(broker.bootstrap_servers, topic, [Message(None, value), Message(None, value)])
    bridge = bridges.start(signup_workflow(topic), group_id=unique("g"))
    status = client.workflow("Signup", wf, "status")
    await until(status.request, lambda s: s == "waiting", "the workflow waiting")

    def outcomes() -> tuple[float, float]:
        s = bridge.metrics()
        return (
            messages_total(s, topic, "signup", "accepted"),
            messages_total(s, topic, "signup", "duplicate"),
        )

    # the second record for the same workflow id is PreviouslyAccepted, never a second run
    await until(outcomes, lambda o: o == (1.0, 1.0), "one accepted and one duplicate")
    await client.workflow("Signup", wf, "approve").request("bridge")
    result = await client.workflow_handle("Signup", wf).attach()
    assert result == "ada@example.com approved by bridge"


async def test_delay_from_a_header_schedules_the_invocation(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, key = unique("delayed"), unique("later")
    await create_topics(broker.bootstrap_servers, [topic])
    bridge = bridges.start(
        recorder(topic, name="later", delay="{header.delay}"),
        group_id=unique("g"),
    )
    await produce(
        broker.bootstrap_servers, topic, [Message(key.encode(), b'"late"', [("delay", b"3s")])]
    )

    await until(
        lambda: messages_total(bridge.metrics(), topic, "later", "accepted"),
        lambda n: n == 1,
        "the delayed record accepted",
    )
    accepted_at = time.monotonic()
    assert await client.object("Recorder", key, "get").request() == []
    await recorded_as(client, key, ["late"])
    assert time.monotonic() - accepted_at > 1.5


async def test_poison_records_go_to_the_dead_letter_topic_with_reasons(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, dlq, tag = unique("poison"), unique("dlq"), unique("p")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    routes = (
        recorder(
            topic,
            name="by-customer",
            key=f"{tag}-{{value.customer}}",
            match={"header.kind": "order"},
        )
        + recorder(
            topic,
            name="delayed",
            key=f"{tag}-delayed",
            delay="{header.delay}",
            match={"header.kind": "later"},
        )
        + route(
            name="missing-handler",
            topic=topic,
            target="service",
            service="Greeter",
            handler="noSuchHandler",
            match={"header.kind": "typo"},
        )
    )
    msgs = [
        Message(b"k0", b"not json", [("kind", b"order")]),
        Message(b"k1", b'{"other": 1}', [("kind", b"order")]),
        Message(b"k2", b'{"customer": "c1"}', [("kind", b"order")]),
        Message(b"k3", b'"x"', [("kind", b"later"), ("delay", b"soon")]),
        Message(b"k4", b'"x"', [("kind", b"typo"), ("trace", b"t4")]),
    ]
    await produce(broker.bootstrap_servers, topic, msgs)
    bridge = bridges.start(
        routes,
        group_id=unique("g"),
        dead_letter_topic=dlq,
        delivery='unknown_target_grace = "1s"',
    )
    dead = await read_topic(broker.bootstrap_servers, dlq, expect=4, timeout=60)
    assert len(dead) == 4
    by_key = {d.key: d for d in dead}  # type: ignore[attr-defined]
    assert set(by_key) == {b"k0", b"k1", b"k3", b"k4"}
    for key, d in by_key.items():
        headers = dict(d.headers)  # type: ignore[attr-defined]
        index = int(key[1:])
        assert d.value == msgs[index].value  # type: ignore[attr-defined]
        assert headers["bridge.topic"] == topic.encode()
        assert headers["bridge.offset"] == str(index).encode()
        assert headers["bridge.partition"] == b"0"
        assert headers["kind"] == dict(msgs[index].headers)["kind"]
    error = {k: dict(d.headers)["bridge.error"].decode() for k, d in by_key.items()}  # type: ignore[attr-defined]
    assert "not JSON" in error[b"k0"]
    assert "value.customer" in error[b"k1"]
    assert "soon" in error[b"k3"]
    assert "404" in error[b"k4"]
    assert dict(by_key[b"k4"].headers)["bridge.route"] == b"missing-handler"  # type: ignore[attr-defined]
    assert dict(by_key[b"k4"].headers)["trace"] == b"t4"  # type: ignore[attr-defined]
    await recorded_as(client, f"{tag}-c1", [{"customer": "c1"}])
    samples = bridge.metrics()
    assert messages_total(samples, topic, "by-customer", "dead_lettered") == 2
    assert messages_total(samples, topic, "by-customer", "accepted") == 1

    await until(
        lambda: bridge.committed(topic),
        lambda c: c == {0: 5.0},
        "partition 0 committed past every record",
    )
