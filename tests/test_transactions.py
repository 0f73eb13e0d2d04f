"""Topics written by transactional producers: every transaction ends with a marker that takes an
offset and never reaches a consumer, and aborted records are skipped under read_committed. The
bridge commits past them once a partition has nothing unfinished, so an idle transactional
topic reaches zero committed lag (KEDA scales to zero, lag alerts settle)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bridge.ingress import Client
from tests.helpers import recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

PARTITIONS = 3


@asynccontextmanager
async def transactional(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx"))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def send(
    producer: AIOKafkaProducer,
    topic: str,
    key: str,
    values: list[int],
    partition: int | None = None,
) -> None:
    """``values[i]`` to partition ``i`` (or all to ``partition``), under key
    ``{key}-{partition}``: a key's records in one partition, in order."""
    for i, value in enumerate(values):
        p = i if partition is None else partition
        await producer.send(topic, str(value).encode(), key=f"{key}-{p}".encode(), partition=p)


async def idle_at_the_end(bridge: BridgeProcess, bootstrap: str, topic: str) -> None:
    ends = await end_offsets(bootstrap, topic)
    await until(
        lambda: bridge.committed(topic),
        lambda got: all(got.get(p, 0.0) == end for p, end in ends.items()),
        f"committed at the ends {ends} (past the markers and aborted records)",
    )
    for name in ("restate_bridge_committed_lag", "restate_bridge_consumer_lag"):
        await until(
            lambda name=name: bridge.per_partition(name, topic),  # type: ignore[misc]
            lambda lag: lag and all(v == 0 for v in lag.values()),
            f"{name} at 0 on every partition",
        )


def only_apache_kafka(broker: Broker) -> None:
    if broker.name == "tansu":
        pytest.skip("tansu 0.6.0 has no transactions")


async def test_committed_and_aborted_transactions_end_at_zero_committed_lag(
    broker: Broker, bridges: BridgeFactory, restate: RestateServer
) -> None:
    only_apache_kafka(broker)
    bootstrap = broker.bootstrap_servers
    topic, key = unique("tx"), unique("k")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    bridge = bridges.start(recorder(topic), group_id=unique("g"))
    async with transactional(bootstrap) as producer:
        for n in range(4):
            async with producer.transaction():
                await send(producer, topic, key, [n * 10, n * 10 + 1, n * 10 + 2])
        await producer.begin_transaction()  # aborted between two committed ones
        await send(producer, topic, key, [900, 901, 902])
        await producer.abort_transaction()
        async with producer.transaction():
            await send(producer, topic, key, [100, 101, 102])
        await producer.begin_transaction()  # a trailing abort
        await send(producer, topic, key, [990, 991, 992])
        await producer.abort_transaction()
    await idle_at_the_end(bridge, bootstrap, topic)
    async with Client(restate.ingress_url) as client:
        for p in range(PARTITIONS):  # in order, each once; aborted records were never sent
            await recorded_as(client, f"{key}-{p}", [p, 10 + p, 20 + p, 30 + p, 100 + p])
    assert bridge.value("restate_bridge_messages_total", topic=topic, outcome="accepted") == 15


async def test_an_open_transaction_is_delivered_only_once_committed_in_order(
    broker: Broker, bridges: BridgeFactory, restate: RestateServer
) -> None:
    only_apache_kafka(broker)
    bootstrap = broker.bootstrap_servers
    topic, key = unique("tx"), unique("k")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    await produce(bootstrap, topic, [Message(f"{key}-0".encode(), b"0", partition=0)])
    bridge = bridges.start(recorder(topic), group_id=unique("g"))
    async with Client(restate.ingress_url) as client, transactional(bootstrap) as producer:
        await recorded_as(client, f"{key}-0", [0])
        await producer.begin_transaction()
        await send(producer, topic, key, [3, 6, 9], partition=0)
        await until(lambda: bridge.committed(topic), lambda c: c.get(0) == 1, "committed 1")
        # nothing of the open transaction: not delivered, nothing committed past its start
        await asyncio.sleep(2)
        assert await recorded(client, f"{key}-0")() == [0]
        assert bridge.committed(topic).get(0) == 1
        await producer.commit_transaction()
        await recorded_as(client, f"{key}-0", [0, 3, 6, 9])
    await idle_at_the_end(bridge, bootstrap, topic)


async def test_a_plain_topic_still_commits_each_record_and_idles_at_zero_lag(
    broker: Broker, bridges: BridgeFactory
) -> None:
    """On both brokers (tansu has no transactions): the watermark as always, lag 0 once idle."""
    bootstrap = broker.bootstrap_servers
    topic, key = unique("plain"), unique("k")
    await create_topics(bootstrap, [topic])
    bridge = bridges.start(recorder(topic), group_id=unique("g"))
    await produce(bootstrap, topic, [Message(key.encode(), str(n).encode()) for n in range(5)])
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 5}, "committed 5")
    await until(
        lambda: bridge.per_partition("restate_bridge_committed_lag", topic),
        lambda lag: lag == {0: 0},
        "committed lag 0",
    )
