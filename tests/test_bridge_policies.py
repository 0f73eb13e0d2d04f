"""Per-route policies end to end: status lists (``retry_on``, ``dead_letter_on``, ``block_on``)
and ``rate_limit``, with a real broker and a real Restate.

Restate does not answer 409, 503 or 400 on demand, so the counting proxy (tests/stack/proxy.py) in
front of the real ingress answers the first sends with the status under test and forwards the
rest unchanged.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from bridge.ingress import Client
from tests.helpers import hold_for, messages_total, recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


def values(key: str, count: int) -> list[Message]:
    return [Message(key.encode(), json.dumps(n).encode()) for n in range(count)]


async def test_retry_on_409_retries_until_accepted_and_delivers_once(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    proxy: IngressProxy,
    restate: RestateServer,
) -> None:
    topic, dlq, key = unique("conflict"), unique("dlq"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    proxy.refuse_status, proxy.refuse = 409, 3
    bridge = bridges.start(
        recorder(topic, name="conflict", retry_on=[409]),
        group_id=unique("g"),
        ingress_url=proxy.url,
        dead_letter_topic=dlq,
    )
    await produce(broker.bootstrap_servers, topic, values(key, 3))
    await recorded_as(client, key, [0, 1, 2])
    sends = proxy.snapshot()
    assert [s.status for s in sends[:4]] == [409, 409, 409, 202]
    assert [s.partition_offset for s in sends[:4]] == [(0, 0)] * 4  # the same record, retried
    samples = bridge.metrics()
    assert samples['restate_bridge_ingress_errors_total{reason="http_409",route="conflict"}'] == 3
    assert samples['restate_bridge_retries_total{route="conflict"}'] == 3
    assert messages_total(samples, topic, "conflict", "accepted") == 3
    assert messages_total(samples, topic, "conflict", "dead_lettered") == 0
    rows = restate.query(f"select id from sys_invocation where target = 'Recorder/{key}/record'")
    assert len(rows) == 3  # one invocation per record: the retried one ran once
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 3.0}, "all committed")
    assert await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=2) == []


async def test_dead_letter_on_503_dead_letters_at_once_with_the_reason(
    broker: Broker, bridges: BridgeFactory, client: Client, proxy: IngressProxy
) -> None:
    topic, dlq, key = unique("shed"), unique("dlq"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    proxy.refuse_status, proxy.refuse = 503, 1
    bridge = bridges.start(
        recorder(topic, name="shed", dead_letter_on=["5xx"]),
        group_id=unique("g"),
        ingress_url=proxy.url,
        dead_letter_topic=dlq,
    )
    await produce(broker.bootstrap_servers, topic, values(key, 3))
    (dead,) = await read_topic(broker.bootstrap_servers, dlq, expect=1)
    headers = dict(dead.headers)
    assert headers["bridge.error"] == (
        b"ingress answered 503: refused by the test proxy (dead_letter_on)"
    )
    assert (headers["bridge.route"], headers["bridge.offset"]) == (b"shed", b"0")
    assert (dead.key, dead.value) == (key.encode(), b"0")
    await recorded_as(client, key, [1, 2])
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 3.0}, "all committed")
    samples = bridge.metrics()
    assert samples['restate_bridge_retries_total{route="shed"}'] == 0  # never retried
    assert messages_total(samples, topic, "shed", "dead_lettered") == 1
    assert messages_total(samples, topic, "shed", "accepted") == 2
    assert [s.status for s in proxy.snapshot()] == [503, 202, 202]


async def test_block_on_400_blocks_the_partition_though_a_dead_letter_topic_exists(
    broker: Broker, bridges: BridgeFactory, client: Client, proxy: IngressProxy
) -> None:
    topic, dlq, key = unique("strict"), unique("dlq"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    proxy.refuse_status, proxy.refuse = 400, 1
    bridge = bridges.start(
        recorder(topic, name="strict", block_on=[400]),
        group_id=unique("g"),
        ingress_url=proxy.url,
        dead_letter_topic=dlq,
    )
    await produce(broker.bootstrap_servers, topic, values(key, 3))
    await until(
        lambda: bridge.per_partition("restate_bridge_partition_blocked", topic),
        lambda b: b.get(0) == 1,
        "partition 0 blocked",
    )
    status = bridge.status_json()
    blocked = json.dumps(status)
    assert "ingress answered 400: refused by the test proxy (block_on)" in blocked, blocked
    assert re.search(
        rf"ERROR .*partition {re.escape(topic)}-0 blocked at offset 0: route strict: ingress "
        r"answered 400: refused by the test proxy \(block_on\) \(the route's block_on names",
        bridge.log(),
    ), bridge.log()[-2000:]
    # nothing behind it goes, nothing is dead-lettered, nothing is committed
    await until(recorded(client, key), hold_for(2.0), "the key untouched for 2 s")
    assert await recorded(client, key)() == []
    assert await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=2) == []
    assert bridge.committed(topic).get(0, 0.0) == 0.0
    samples = bridge.metrics()
    assert messages_total(samples, topic, "strict", "dead_lettered") == 0
    assert [s.status for s in proxy.snapshot()] == [400]  # never sent again
    assert bridge.readyz()[0] == 200  # a blocked partition is an alert, not a dead worker


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_rate_limit_spreads_sends_over_time_and_shows_the_waiting(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    topic, tag = unique("paced"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    keys = [f"{tag}-{i}" for i in range(10)]
    # every record produced before the bridge starts: only the rate holds them back
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(keys[n % 10].encode(), json.dumps(n).encode()) for n in range(100)],
    )
    bridge = bridges.start(
        recorder(topic, name="paced", rate_limit=20), group_id=unique("g"), wait_ready=False
    )
    for i, key in enumerate(keys):
        await recorded_as(client, key, list(range(i, 100, 10)), timeout=60)
    rows = restate.query(
        f"select id, created_at from sys_invocation where target like 'Recorder/{tag}-%/record'"
    )
    assert len(rows) == 100  # each record once
    created = sorted(_instant(row["created_at"]) for row in rows)
    burst, rate = 20, 20
    assert created[-1] - created[0] >= (100 - burst) / rate * 0.95, created[-1] - created[0]
    samples = bridge.metrics()
    assert samples['restate_bridge_rate_limit_records_per_second{route="paced"}'] == 20
    assert samples['restate_bridge_rate_limited_total{route="paced"}'] >= 50
    assert samples['restate_bridge_rate_limit_wait_seconds_total{route="paced"}'] > 1
    assert messages_total(samples, topic, "paced", "accepted") == 100
