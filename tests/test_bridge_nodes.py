"""Several ingress nodes end to end, on both brokers: two counting proxies in front of the
session's Restate stand for two nodes of one cluster. One of them fails mid-stream: first it
loses the answers of sends it forwarded (the invocations exist, the bridge cannot know), then it
stops. Retries go to the other node, where the idempotency key makes them ``PreviouslyAccepted``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from bridge.ingress import Client
from tests.helpers import recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

KEYS = 20
PER_PHASE = 200


@pytest.fixture
def nodes(restate: RestateServer) -> Iterator[tuple[IngressProxy, IngressProxy]]:
    # each send waits a little in the proxy, so that sends are under way when one node stops
    pair = (
        IngressProxy(restate.ingress_url, delay=0.05),
        IngressProxy(restate.ingress_url, delay=0.05),
    )
    for proxy in pair:
        proxy.start()
    yield pair
    for proxy in pair:
        if proxy._thread.is_alive():  # not the one the test stopped
            proxy.stop()


async def test_sends_spread_over_nodes_and_leave_a_stopped_one(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    nodes: tuple[IngressProxy, IngressProxy],
) -> None:
    a, b = nodes
    topic, tag = unique("nodes"), unique("nk")
    await create_topics(broker.bootstrap_servers, [topic], partitions=4)
    keys = [f"{tag}-{i}" for i in range(KEYS)]
    bridge = bridges.start(
        recorder(topic, name="rec"), group_id=unique("g"), ingress_url=f"{a.url}, {b.url}"
    )

    def phase(first: int) -> list[Message]:
        return [
            Message(keys[i % KEYS].encode(), json.dumps({"n": i}).encode())
            for i in range(first, first + PER_PHASE)
        ]

    # a answers its first sends, then fails mid-stream: it forwards, the answers are lost
    a.lose_from = 10
    written = await produce(broker.bootstrap_servers, topic, phase(0))
    await until(lambda: a.snapshot(lambda s: s.lost), bool, "an answer lost", 60, 0.02)
    # both nodes took sends while both answered
    assert len(a.snapshot(lambda s: s.status == 202 and not s.lost)) == 10
    assert len(b.answered(202)) >= 10
    await asyncio.to_thread(a.stop)
    down = await until(
        lambda: bridge.value("restate_bridge_ingress_node_up", node=a.url),
        lambda up: up == 0,
        f"node {a.url} down in /metrics",
        30,
    )
    assert down == 0
    sends_to_a = bridge.value("restate_bridge_ingress_node_sends_total", node=a.url)
    written += await produce(broker.bootstrap_servers, topic, phase(PER_PHASE))

    # every record exactly once, in key order, wherever each send went
    for k, key in enumerate(keys):
        expected = [{"n": i} for i in range(k, 2 * PER_PHASE, KEYS)]
        await recorded_as(client, key, expected, timeout=90)
    ends = {}
    for meta in written:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    await until(lambda: bridge.committed(topic), lambda c: c == ends, f"committed at {ends}", 60)

    # after the stop, nothing more went to the stopped node: phase 1 went through b alone
    assert bridge.value("restate_bridge_ingress_node_sends_total", node=a.url) == sends_to_a
    through_b = {s.idempotency_key for s in b.answered(202)}
    phase1 = {f"{topic}-{m.partition}-{m.offset}:rec" for m in written[PER_PHASE:]}
    assert phase1 <= through_b
    assert bridge.value("restate_bridge_ingress_node_up", node=b.url) == 1
    assert bridge.value("restate_bridge_ingress_up") == 1
    sent_b = bridge.value("restate_bridge_ingress_node_sends_total", node=b.url)
    assert sent_b >= len(b.answered(202)) >= PER_PHASE
    assert (
        bridge.value("restate_bridge_messages_total", route="rec", outcome="accepted")
        + (bridge.value("restate_bridge_messages_total", route="rec", outcome="duplicate"))
        == 2 * PER_PHASE
    )
    assert bridge.value("restate_bridge_messages_total", outcome="dead_lettered") == 0
    # the lost answers: applied through a, retried through b, deduplicated by Restate
    lost = {s.idempotency_key for s in a.snapshot(lambda s: s.lost)}
    assert lost <= through_b
    assert bridge.value("restate_bridge_messages_total", outcome="duplicate") >= 1

    # still ready, saying which node is down; the status page lists both
    status, ready = bridge.readyz()
    assert status == 200
    assert ready["detail"].startswith(f"consuming; ingress node {a.url}: "), ready
    listed = {n["node"]: n for n in bridge.status_json()["ingress_nodes"]}
    assert listed[a.url]["up"] is False
    assert listed[a.url]["reason"]
    assert listed[b.url]["up"] is True
