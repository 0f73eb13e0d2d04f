"""Small Kafka helpers for tests and benchmarks: create topics, produce, read a topic back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    partition: int | None = None


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=configs)
                for n in names
            ]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, messages: Iterable[Message], timeout: float = 40
) -> list[Any]:
    """Produce ``messages`` in order; their ``RecordMetadata`` (partition, offset) in that order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", request_timeout_ms=int(timeout * 1000)
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, m.value, key=m.key, headers=list(m.headers), partition=m.partition
            )
            for m in messages
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[Any]:
    """Read a topic from the start (no group) until ``expect`` records arrived or time is up."""
    # subscribed without a group: aiokafka assigns every partition once metadata knows them
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await consumer.stop()
    return out


async def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Change topic configs (e.g. ``min.insync.replicas``) with the admin API."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()
