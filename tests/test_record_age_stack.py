"""``max_record_age`` end to end on both brokers: a record written (by its Kafka timestamp) longer
ago than the limit is dead-lettered with its age, or held at its partition, in its key's lane,
until the operator releases it (``retry`` sends it after all, in order)."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer

from bridge.ingress import Client
from tests.helpers import hold_for, recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import create_topics, read_topic

pytestmark = pytest.mark.integration

HOUR_MS = 3600 * 1000


async def produce_aged(bootstrap: str, topic: str, records: list[tuple[str, str, int]]) -> None:
    """``(key, value, written this many ms ago)``, in order, to partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for key, value, ago in records:
            await producer.send_and_wait(
                topic, value.encode(), key=key.encode(), partition=0, timestamp_ms=now - ago
            )
    finally:
        await producer.stop()


async def test_too_old_records_are_dead_lettered_with_their_age(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, dlq, tag = unique("aged"), unique("aged-dlq"), unique("a")
    await create_topics(bootstrap, [topic, dlq])
    key = f"{tag}-k"
    await produce_aged(bootstrap, topic, [("k", '"old"', 3 * HOUR_MS), ("k", '"new"', 0)])
    bridges.start(
        recorder(topic, key=f"{tag}-{{key}}", max_record_age="2h"),
        group_id=unique("g"),
        dead_letter_topic=dlq,
    )
    await recorded_as(client, key, ["new"])
    [letter] = await read_topic(bootstrap, dlq, expect=1)
    error = dict(letter.headers)["bridge.error"].decode()
    assert error == "older than max_record_age (2h): written 3.0h ago"
    assert letter.value == b'"old"'


async def test_a_held_old_record_keeps_its_key_behind_it_until_the_operator_retries(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, dlq, tag = unique("held"), unique("held-dlq"), unique("h")
    await create_topics(bootstrap, [topic, dlq])
    await produce_aged(
        bootstrap,
        topic,
        [("k", '"first"', 0), ("k", '"old"', 3 * HOUR_MS), ("k", '"after"', 0), ("j", '"j"', 0)],
    )
    bridge = bridges.start(
        recorder(
            topic,
            key=f"{tag}-{{key}}",
            ordering="key",
            max_record_age="2h",
            on_record_too_old="block",
        ),
        group_id=unique("g"),
        dead_letter_topic=dlq,  # held all the same: the route says block
    )
    await recorded_as(client, f"{tag}-j", ["j"])  # another key goes on
    await until(lambda: bridge.status_json()["controls"]["blocked"], bool, "held, visibly")
    [row] = bridge.status_json()["controls"]["blocked"]
    assert (row["offset"], row["route"]) == (1, "rec")
    assert row["reason"] == "older than max_record_age (2h): written 3.0h ago"
    # the key's next record waits behind the held one; nothing committed past it
    await until(recorded(client, f"{tag}-k"), hold_for(2.0), "the key held for 2 s")
    assert await client.object("Recorder", f"{tag}-k", "get").request() == ["first"]
    assert bridge.committed(topic).get(0, 0) <= 1

    status, answer = bridge.post(f"/admin/partitions/{topic}/0/release", {"action": "retry"})
    assert status == 200, answer
    await recorded_as(client, f"{tag}-k", ["first", "old", "after"])
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == 4, "committed to the end")
    assert await read_topic(bootstrap, dlq, expect=1, timeout=1) == []
