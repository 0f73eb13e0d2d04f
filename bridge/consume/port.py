"""The Kafka clients as the bridge sees them: a :class:`ConsumerPort` and a lazily started
producer, each made by a factory the caller may replace (tests pass fakes by constructor).

aiokafka insists on its own ``TopicPartition`` in some calls (``commit``); the adapter converts,
so the rest of the bridge uses :class:`bridge.core.offsets.TopicPartition` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from ..config import BridgeConfig
from ..core.offsets import TopicPartition
from ..deliver.lease import Ended, unless_set
from .kafka import kafka_options
from .oauth import OAuthLogin


class Rebalances(Protocol):
    """What the consumer calls when the group's assignment changes."""

    async def revoked(self, tps: set[TopicPartition]) -> None: ...

    def assigned(self, tps: set[TopicPartition]) -> None: ...


class ConsumerPort(Protocol):
    """What the bridge uses of a Kafka consumer."""

    def subscribe(self, config: BridgeConfig, listener: Rebalances) -> None: ...

    def unsubscribe(self) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """Fetched records per partition (each has topic, partition, offset, timestamp, key,
        value, headers)."""

    def pause(self, *tps: TopicPartition) -> None: ...

    def resume(self, *tps: TopicPartition) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    async def position(self, tp: TopicPartition) -> int: ...

    async def commit(self, positions: dict[TopicPartition, int]) -> None: ...


ConsumerFactory = Callable[[BridgeConfig], ConsumerPort]
T = TypeVar("T")


def _kafka(tps: Iterable[TopicPartition]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(tp.topic, tp.partition) for tp in tps]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, rebalances: Rebalances) -> None:
        self._rebalances = rebalances

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self._rebalances.revoked({TopicPartition(*tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        self._rebalances.assigned({TopicPartition(*tp) for tp in assigned})


class KafkaConsumer:
    """:class:`ConsumerPort` over aiokafka's consumer (the bridge's settings, no auto-commit)."""

    def __init__(self, config: BridgeConfig, login: OAuthLogin | None = None) -> None:
        kafka = config.kafka
        self._consumer = AIOKafkaConsumer(
            **kafka_options(kafka, login),
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            isolation_level=kafka.isolation_level,
            session_timeout_ms=kafka.session_timeout_ms,
            metadata_max_age_ms=kafka.metadata_max_age_ms,
            heartbeat_interval_ms=max(100, kafka.session_timeout_ms // 3),
            fetch_max_bytes=kafka.fetch_max_bytes,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
        )

    def subscribe(self, config: BridgeConfig, listener: Rebalances) -> None:
        wrapped = _Listener(listener)
        if config.topic_pattern:
            self._consumer.subscribe(pattern=config.topic_pattern, listener=wrapped)
        else:
            self._consumer.subscribe(topics=list(config.topics), listener=wrapped)

    def unsubscribe(self) -> None:
        self._consumer.unsubscribe()

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {TopicPartition(*tp): msgs for tp, msgs in batches.items()}

    def pause(self, *tps: TopicPartition) -> None:
        self._consumer.pause(*_kafka(tps))

    def resume(self, *tps: TopicPartition) -> None:
        self._consumer.resume(*_kafka(tps))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition), offset)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(*tp) for tp in self._consumer.assignment()}

    def highwater(self, tp: TopicPartition) -> int | None:
        mark: int | None = self._consumer.highwater(KafkaTopicPartition(tp.topic, tp.partition))
        return mark

    async def position(self, tp: TopicPartition) -> int:
        pos: int = await self._consumer.position(KafkaTopicPartition(tp.topic, tp.partition))
        return pos

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        await self._consumer.commit(
            {KafkaTopicPartition(tp.topic, tp.partition): p for tp, p in positions.items()}
        )


class LazyProducer:
    """The producer (dead letters, replies, skipped records), started on first use and stopped
    by :meth:`aclose`; ``make`` builds it (aiokafka's by default)."""

    def __init__(
        self,
        config: BridgeConfig,
        make: Callable[[BridgeConfig], Any] | None = None,
        *,
        login: OAuthLogin | None = None,
    ) -> None:
        self._config = config
        self._make = make or (
            lambda c: AIOKafkaProducer(**kafka_options(c.kafka, login), acks="all")
        )
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def get(self) -> Any:
        async with self._lock:
            if self._closed:
                raise RuntimeError("the bridge is not running")
            if self._producer is None:
                producer = self._make(self._config)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def cluster_topics(self) -> set[str]:
        """Every topic of the cluster, by a metadata request that never creates one."""
        return await cluster_topics(await self.get())

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None


async def cluster_topics(producer: Any) -> set[str]:
    """Every topic of the cluster, by a metadata request that never creates one."""
    cluster = await producer.client.fetch_all_metadata()
    topics: set[str] = cluster.topics()
    return topics


async def unless_stopped(starting: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``starting``'s result, or ``None`` when ``stop`` is set first (``starting`` is
    cancelled)."""
    started = await unless_set(starting, stop)
    return None if isinstance(started, Ended) else started


__all__: Sequence[str] = (
    "ConsumerFactory",
    "ConsumerPort",
    "KafkaConsumer",
    "LazyProducer",
    "Rebalances",
    "cluster_topics",
    "unless_stopped",
)
