"""Restate's own Kafka subscription (the benchmark's peer) works on both brokers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.helpers import eventually
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.restate import KafkaCluster, RestateServer
from tests.stack.services import HandlerServer

pytestmark = pytest.mark.integration


@pytest.fixture
def restate_with_kafka(
    tmp_path: Path, broker: Broker, handlers: HandlerServer
) -> Iterator[RestateServer]:
    server = RestateServer(
        tmp_path / "restate", kafka=KafkaCluster("bench", broker.bootstrap_servers)
    )
    server.start()
    handlers.register_with(server)
    yield server
    server.stop()


async def test_subscription_delivers_in_order_per_key(
    broker: Broker, restate_with_kafka: RestateServer
) -> None:
    restate = restate_with_kafka
    topic = f"sub-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap_servers, [topic], partitions=2)
    keys = [f"{topic}-k{i}" for i in range(3)]
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(keys[i % 3].encode(), json.dumps(i).encode()) for i in range(30)],
    )
    restate.admin(
        "POST",
        "/subscriptions",
        {
            "source": f"kafka://bench/{topic}",
            "sink": "service://Recorder/record",
            # tansu holds a new member's first join for half the session timeout
            "options": {"auto.offset.reset": "earliest", "session.timeout.ms": "6000"},
        },
    )
    async with Client(restate.ingress_url) as client:
        for k, key in enumerate(keys):
            expected = list(range(k, 30, 3))

            async def state(key: str = key) -> object:
                return await client.object("Recorder", key, "get").request()

            assert await eventually(state, expected, timeout=60) == expected
