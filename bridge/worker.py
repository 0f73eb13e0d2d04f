"""The bridge's run loop: fetch records, plan invocations, hand them to the dispatcher, commit.

Data flows one way: record -> route match -> invocation -> ingress -> acknowledgement -> commit.
Fetching pauses when ``delivery.max_pending_records`` records are unfinished or while the ingress
is unreachable, so memory is bounded by fetch sizes and limits, never by the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from .config import BridgeConfig, KafkaConfig
from .deadletter import DeadLetterSink
from .dispatch import Blocked, Dispatcher, PendingRecord
from .health import IngressHealth
from .ingress import Client
from .metrics import Metrics
from .offsets import OffsetTracker, TopicPartition
from .record import Record
from .routing import Router
from .server import StatusServer
from .status import RecentDeadLetters, snapshot

log = logging.getLogger(__name__)


def kafka_options(kafka: KafkaConfig) -> dict[str, Any]:
    """Connection options shared by the consumer and the dead-letter producer."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password_env:
            options["sasl_plain_password"] = os.environ.get(kafka.sasl_password_env)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    return options


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._bridge._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._bridge._on_assigned(set(assigned))


class Bridge:
    """One bridge worker. ``await bridge.run(stop)`` returns after a graceful shutdown."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        metrics: Metrics | None = None,
        token: str | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._token = token
        self.router = Router(config)
        self.metrics.prepare((r.name, r.topics) for r in config.routes)
        self.tracker = OffsetTracker()
        self.health = IngressHealth(self.metrics)
        self.dead_letters = RecentDeadLetters()
        self.status = StatusServer(
            self.metrics,
            self.readiness,
            *config.metrics.host_port,
            status=lambda: snapshot(config, self.metrics, self.dead_letters, self.readiness()),
        )
        self._blocked: dict[TopicPartition, str] = {}
        self._paused: set[TopicPartition] = set()
        self._progress = asyncio.Event()
        self._joined = False
        self._assigned: set[TopicPartition] = set()
        """Owned partitions per the rebalance callbacks (aiokafka's ``assignment()`` keeps the
        old partitions until a rebalance completes)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._dispatcher: Dispatcher | None = None

    def readiness(self) -> tuple[bool, str]:
        if not self._joined:
            return False, "not yet in the Kafka consumer group"
        if not self.health.up:
            return False, f"Restate ingress unreachable: {self.health.reason}"
        return True, "consuming"

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        delivery = cfg.delivery
        await self.status.start()
        client = Client(
            cfg.restate.ingress_url,
            token=self._token,
            timeout=cfg.restate.request_timeout.total_seconds(),
            max_connections=cfg.restate.max_connections,
        )
        producer: AIOKafkaProducer | None = None
        consumer: AIOKafkaConsumer | None = None
        probe: asyncio.Task[None] | None = None
        try:
            dead_letters = None
            if cfg.dead_letter.topic:
                producer = AIOKafkaProducer(**kafka_options(cfg.kafka), acks="all")
                await producer.start()
                dead_letters = DeadLetterSink(producer, cfg.dead_letter.topic)
            self._dispatcher = Dispatcher(
                client=client,
                metrics=self.metrics,
                health=self.health,
                delivery=delivery,
                route_limits={r.name: r.config.max_in_flight for r in self.router.routes},
                dead_letters=dead_letters,
                on_finished=self._on_finished,
                on_blocked=self._on_blocked,
                on_dead_letter=self.dead_letters.add,
                request_timeout=cfg.restate.request_timeout.total_seconds(),
            )
            probe = asyncio.create_task(self.health.probe_forever(client))
            consumer = self._consumer = AIOKafkaConsumer(
                **kafka_options(cfg.kafka),
                group_id=cfg.kafka.group_id,
                enable_auto_commit=False,
                auto_offset_reset=cfg.kafka.auto_offset_reset,
                session_timeout_ms=cfg.kafka.session_timeout_ms,
                heartbeat_interval_ms=max(100, cfg.kafka.session_timeout_ms // 3),
                fetch_max_bytes=cfg.kafka.fetch_max_bytes,
                max_partition_fetch_bytes=cfg.kafka.max_partition_fetch_bytes,
            )
            listener = _Rebalance(self)
            if cfg.topic_pattern:
                consumer.subscribe(pattern=cfg.topic_pattern, listener=listener)
            else:
                consumer.subscribe(topics=list(cfg.topics), listener=listener)
            await consumer.start()
            log.info("consuming %s as group %s", cfg.topic_pattern or list(cfg.topics),
                     cfg.kafka.group_id)  # fmt: skip
            await self._consume(consumer, stop)
            await self._shutdown(consumer)
        finally:
            if probe is not None:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
            if self._dispatcher is not None:
                await self._dispatcher.aclose()
            if consumer is not None:
                await consumer.stop()
            if producer is not None:
                await producer.stop()
            await client.aclose()
            await self.status.stop()

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        delivery = self.config.delivery
        interval = delivery.commit_interval.total_seconds()
        next_commit = time.monotonic() + interval
        while not stop.is_set():
            capacity = delivery.max_pending_records - self.tracker.in_progress
            self._flow_control(consumer, capacity > 0 and self.health.up)
            batches = await consumer.getmany(timeout_ms=100, max_records=max(capacity, 1))
            for msgs in batches.values():
                for msg in msgs:
                    self._handle(msg)
            self.metrics.pending_records.set(self.tracker.in_progress)
            if time.monotonic() >= next_commit:
                await self._commit(consumer)
                await self._update_lag(consumer)
                next_commit = time.monotonic() + interval

    async def _shutdown(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching, wait for in-flight sends (up to ``drain_timeout``), commit."""
        self._flow_control(consumer, False)
        unblocked = {tp for tp in self.tracker.partitions if tp not in self._blocked}
        log.info("stopping: draining %d unfinished records", self.tracker.in_progress)
        drained = await self._drain(unblocked)
        if not drained:
            log.warning("drain timed out; committing what finished, the rest is redelivered")
        await self._commit(consumer)

    # -- records ---------------------------------------------------------------------------

    def _handle(self, msg: Any) -> None:
        record = Record(
            msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value,
            tuple(msg.headers),
        )  # fmt: skip
        tp = TopicPartition(msg.topic, msg.partition)
        owner = self.tracker.add(tp, msg.offset)
        items = self.router.plan(record)
        if not items:
            self.metrics.messages.labels(msg.topic, "", "unrouted").inc()
            self.tracker.finish(tp, msg.offset)
            return
        pending = PendingRecord(record, tp, len(items), owner)
        assert self._dispatcher is not None
        for item in items:
            self._dispatcher.submit(pending, item)

    def _on_finished(self, pending: PendingRecord) -> None:
        self.tracker.finish(pending.tp, pending.record.offset, pending.owner)
        self._progress.set()

    def _on_blocked(self, blocked: Blocked) -> None:
        tp = blocked.tp
        self._blocked[tp] = blocked.reason
        self.metrics.partition_blocked.labels(tp.topic, str(tp.partition)).set(1)

    def _flow_control(self, consumer: AIOKafkaConsumer, fetch: bool) -> None:
        """Pause fetching everywhere (or only on blocked partitions); resume when possible."""
        # the callbacks' view of ownership: consumer.assignment() lags behind a revocation
        assigned = self._assigned
        want_paused = set(assigned) if not fetch else assigned & self._blocked.keys()
        if want_paused == self._paused:
            return
        if to_pause := want_paused - self._paused:
            consumer.pause(*to_pause)
        if to_resume := (self._paused - want_paused) & assigned:
            consumer.resume(*to_resume)
        self._paused = want_paused

    # -- offsets ---------------------------------------------------------------------------

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None
    ) -> None:
        positions = self.tracker.to_commit(only)
        if not positions:
            return
        try:
            await consumer.commit(positions)
        except KafkaError as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("commit of %s failed: %s", positions, exc)
            return
        self.tracker.committed(positions)
        self.metrics.commits.labels("ok").inc()
        for tp, pos in positions.items():
            self.metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(pos)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in sorted(self._assigned):
            # tansu's ListOffsets(latest) is wrong; the Fetch high watermark is right on both
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 0.5)
            except (TimeoutError, KafkaError):
                continue
            if tp not in self._assigned:  # revoked meanwhile: its gauge is gone, keep it so
                continue
            lag = max(0, highwater - position)
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    async def _drain(self, tps: set[TopicPartition]) -> bool:
        deadline = time.monotonic() + self.config.delivery.drain_timeout.total_seconds()
        while self.tracker.in_progress_of(tps) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
        return True

    async def _on_revoked(self, tps: set[TopicPartition]) -> None:
        if not tps:
            return
        consumer = self._consumer
        assert consumer is not None
        assert self._dispatcher is not None
        unblocked = {tp for tp in tps if tp not in self._blocked}
        log.info("partitions revoked: %s; draining", sorted(tps))
        await self._drain(unblocked)
        await self._commit(consumer, only=tps)
        self._dispatcher.drop(tps)
        self.tracker.forget(tps)
        self._paused -= tps
        self._assigned -= tps
        for tp in tps:
            self._blocked.pop(tp, None)
            labels = (tp.topic, str(tp.partition))
            for gauge in (self.metrics.consumer_lag, self.metrics.partition_blocked):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)

    def _on_assigned(self, tps: set[TopicPartition]) -> None:
        self._joined = True
        self._assigned = set(tps)
        log.info("partitions assigned: %s", sorted(tps))
