"""The bridge end to end: Kafka records in, Restate invocations out, per target kind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge.ingress import Client
from tests.conftest import BridgeFactory, Broker
from tests.stack.kafka_io import Message, create_topics, produce

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30
) -> Any:
    """Poll ``probe`` until it returns ``expected``; return the last value either way."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await probe()
    return value


def recorded(client: Client, key: str) -> Callable[[], Awaitable[Any]]:
    return lambda: client.object("Recorder", key, "get").request()


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
        assert await eventually(recorded(client, key), expected) == expected
    samples = bridge.metrics()
    accepted = f'restate_bridge_messages_total{{outcome="accepted",route="ledger",topic="{topic}"}}'
    assert samples[accepted] == 100
