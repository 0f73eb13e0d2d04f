"""``/status.json`` (the status page's data) equals ``/metrics``, column by column, non-zero.

Every column is made non-zero first: accepted, duplicate (a workflow id sent twice), dead-lettered
(a poison record), retries and errors (the proxy refuses the first sends), latency, in-flight and
pending (the proxy holds sends), lag (fetching paused at ``max_pending_records``) and committed.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import recorder, signup_workflow, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.proxy import IngressProxy

pytestmark = pytest.mark.integration

COLUMNS = {
    "accepted": ("restate_bridge_messages_total", {"outcome": "accepted"}),
    "duplicate": ("restate_bridge_messages_total", {"outcome": "duplicate"}),
    "dead_lettered": ("restate_bridge_messages_total", {"outcome": "dead_lettered"}),
    "in_flight": ("restate_bridge_in_flight", {}),
    "retries": ("restate_bridge_retries_total", {}),
    "errors": ("restate_bridge_ingress_errors_total", {}),
    "latency_sum": ("restate_bridge_ingress_latency_seconds_sum", {}),
    "latency_count": ("restate_bridge_ingress_latency_seconds_count", {}),
}


def outcome(bridge: BridgeProcess, name: str, which: str) -> float:
    return bridge.value("restate_bridge_messages_total", route=name, outcome=which)


async def test_status_json_equals_metrics_on_non_zero_values(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy
) -> None:
    topic, dlq, tag = unique("status"), unique("dlq"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic], partitions=2)
    await create_topics(broker.bootstrap_servers, [dlq])
    routes = recorder(topic, body="{value.n}", match={"header.kind": "rec"})
    routes += signup_workflow(topic, match={"header.kind": "signup"})
    rec, signup = [("kind", b"rec")], [("kind", b"signup")]
    user = json.dumps({"user": tag, "email": "a@example.com"}).encode()
    proxy.refuse = 2  # two 503s: retries and errors
    bridge = bridges.start(
        routes,
        group_id=unique("g"),
        ingress_url=proxy.url,
        dead_letter_topic=dlq,
        delivery="max_pending_records = 20",
    )
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(f"{tag}-{i}".encode(), b'{"n": %d}' % i, rec) for i in range(10)]
        + [Message(b"poison", b"not json {", rec)]
        + [Message(b"u", user, signup), Message(b"u", user, signup)],
    )
    await until(
        lambda: (outcome(bridge, "rec", "accepted"), outcome(bridge, "signup", "duplicate")),
        lambda ad: ad == (10, 1),
        "the first records done",
    )
    # then the ingress hangs: 20 sends in flight and pending, the rest of the topic not fetched
    proxy.hold()
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(f"{tag}-h{i}".encode(), b'{"n": %d}' % i, rec) for i in range(50)],
    )
    await until(
        lambda: (
            bridge.value("restate_bridge_in_flight"),
            sum(bridge.per_partition("restate_bridge_consumer_lag", topic).values()),
        ),
        lambda fl: fl == (20, 30),
        "20 sends held and 30 records left unfetched",
    )

    status, metrics = bridge.status_json(), bridge
    rows = {r["name"]: r for r in status["routes"]}
    for column, (name, labels) in COLUMNS.items():
        for route_name, row in rows.items():
            want = metrics.value(name, route=route_name, **labels)
            assert row[column] == want, (column, route_name, row[column], want)
        assert any(row[column] > 0 for row in rows.values()), f"{column} is 0 everywhere"
    assert rows["signup"]["duplicate"] == 1
    assert rows["rec"]["dead_lettered"] == 1
    assert rows["rec"]["in_flight"] == 20
    assert rows["rec"]["errors"] == 2

    parts = {p["partition"]: p for p in status["partitions"] if p["topic"] == topic}
    lag = metrics.per_partition("restate_bridge_consumer_lag", topic)
    committed = metrics.committed(topic)
    assert {p: row["lag"] for p, row in parts.items()} == lag
    assert {p: row["committed"] for p, row in parts.items() if p in committed} == committed
    assert sum(lag.values()) == 30
    assert sum(committed.values()) == 13
    assert status["pending_records"] == metrics.value("restate_bridge_pending_records") == 20
    assert status["ingress_up"] == metrics.value("restate_bridge_ingress_up") == 1
    assert [d["offset"] for d in status["dead_letters"]] != []
    assert status["dead_letters"][0]["route"] == "rec"
