"""The bridge's run loop: fetch records, plan invocations, hand them to the dispatcher, commit.

Data flows one way: record -> route match -> invocation -> ingress -> acknowledgement -> commit.
Fetching pauses when ``delivery.max_pending_records`` records are unfinished or while the ingress
is unreachable, so memory is bounded by fetch sizes and limits, never by the topic. One partition
pauses alone when it is blocked, when ``delivery.max_pending_per_partition`` of its records are
fetched and not yet committable (a record that stays unfinished holds back every commit after it),
or when the operator paused its topic or every route that reads it (:mod:`bridge.core.controls`; the
admin API is :mod:`bridge.operate.admin`). The operator's controls are process state: they hold
across
rebalances, and a partition given back is paused before anything of it is fetched.

Lifecycle (:meth:`Bridge.run`)::

    start   status server -> ingress client (+ health probe, token file) -> attach client (reply
            routes) -> Kafka security check -> producer (dead letters and replies) -> dispatcher
            -> consumer
    run     fetch, plan, submit; commit and update the per-partition gauges every commit_interval
    stop    stop fetching -> wait for in-flight sends (up to drain_timeout) -> commit
            -> cancel what is left -> close in reverse start order


Reload (:mod:`bridge.operate.reload`): new routes are swapped in by the consume loop between two
fetches, so every record is planned by one set of routes and invocations already planned go on as
planned. When the topics change, the loop stops fetching, drains and commits before it subscribes
anew: aiokafka commits only partitions of its current subscription, so the revocation that
follows could no longer commit what finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from .config import BridgeConfig, ingress_ssl_context, load_config
from .config.diff import ConfigDiff
from .consume.kafka import KafkaRefused, check_security, kafka_options
from .core.controls import (
    BadRequest,
    Blocked,
    ControlKind,
    Controls,
    ReleaseRequest,
    ReleaseSkip,
    SkipOrder,
    UnknownName,
    fetch_paused,
    readers,
    where_blocked,
)
from .core.offsets import OffsetTracker, PartitionOffsets, TopicPartition
from .core.record import Record, coordinates
from .core.routing import Invocation, Poison, Router, Skip
from .deliver.dispatcher import Dispatcher
from .deliver.health import IngressHealth
from .deliver.holds import Held
from .deliver.lease import PendingRecord
from .ingress import Client
from .operate.metrics import Metrics
from .operate.reload import CannotApply, Load, NotRunning, Reloader, unrunnable
from .operate.server import StatusServer
from .operate.status import RecentDeadLetters, snapshot
from .schemas.decoder import Decoder, route_formats
from .schemas.setup import open_decoder, uses_registry
from .secrets import TokenFile
from .sinks.deadletter import DeadLetter, DeadLetterSink
from .sinks.parking import Parking
from .sinks.replies import ReplySink

log = logging.getLogger(__name__)

LAG_QUERY_TIMEOUT = 0.5
"""Seconds to wait for one partition's position in the lag update (it may need a round trip)."""


def _partitions(tps: set[TopicPartition]) -> list[dict[str, Any]]:
    return [{"topic": tp.topic, "partition": tp.partition} for tp in sorted(tps)]


def _record(msg: Any) -> Record:
    """aiokafka's ``ConsumerRecord`` as the bridge's :class:`Record`."""
    headers = tuple(msg.headers or ())
    return Record(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value, headers)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._bridge.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._bridge.partitions_assigned(set(assigned))


async def _cluster_topics(producer: AIOKafkaProducer) -> set[str]:
    """Every topic of the cluster, by a metadata request that never creates one."""
    cluster = await producer.client.fetch_all_metadata()
    topics: set[str] = cluster.topics()
    return topics


async def _unless_stopped(
    starting: Coroutine[Any, Any, AIOKafkaConsumer], stop: asyncio.Event
) -> AIOKafkaConsumer | None:
    """``starting``'s result, or ``None`` when ``stop`` is set first (``starting`` is cancelled)."""
    start = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not start.done():
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await start
    return None if start.cancelled() else start.result()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _load_again(running: BridgeConfig) -> BridgeConfig:
    """The default reload: the same file, with this process's environment."""
    return load_config(running.path, os.environ, running=running)


@dataclass
class _Swap:
    """New routes waiting for the consume loop, and the reload waiting for them to run."""

    config: BridgeConfig
    changes: ConfigDiff
    done: asyncio.Future[None]


class Bridge:
    """One bridge worker. ``await bridge.run(stop)`` returns after a graceful shutdown."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        metrics: Metrics | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Load = _load_again,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._token = token or config.restate.token
        self._clock = clock
        self.router = Router(config)
        self._prepare_metrics(config)
        self.reloader = Reloader(
            running=lambda: self.config,
            load=load,
            apply=self.reload_routes,
            metrics=self.metrics,
        )
        self._reload_wanted = asyncio.Event()
        self._swap: _Swap | None = None
        self._consuming = False
        """True while the consume loop runs: only then can routes be swapped."""
        self._subscribed_anew = False
        """Subscribed to other topics since the last assignment: aiokafka has dropped the old
        partitions' state before the revocation callback runs."""
        self._stack: contextlib.AsyncExitStack | None = None
        self._replies_ready = False
        """Reply routes can run: the attach client and the reply producer were made at start."""
        self.tracker = OffsetTracker()
        self.health = IngressHealth(self.metrics, config.restate.ingress_urls)
        self.dead_letters = RecentDeadLetters()
        self.controls = Controls()
        """The operator's pauses, skip orders and releases (the admin API changes them)."""
        self.status = StatusServer(
            self.metrics,
            self.readiness,
            *config.metrics.host_port,
            token=config.metrics.token,
            status=lambda: snapshot(
                self.config,
                self.metrics,
                self.dead_letters,
                self.readiness(),
                self.blocked,
                controls=self.controls_view(),
                ingress_nodes=self.health.nodes(),
            ),
            reload=self.admin_reload,
            admin=self,
        )
        self._blocked: dict[TopicPartition, tuple[Blocked, float]] = {}
        """Blocked partitions (at their lowest blocked offset) with the fetch time of their oldest
        unfinished record; kept for the life of the process (until the operator releases one),
        also while a partition is not owned, so that it stays blocked when a rebalance gives it
        back."""
        self._paused: set[TopicPartition] = set()
        self._operator_paused: set[TopicPartition] = set()
        """Owned partitions whose fetching the operator's pauses stop (:func:`fetch_paused`)."""
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._parking = Parking(self._started_producer, self._cluster_topics)
        self._progress = asyncio.Event()
        self._joined = False
        self._assigned: set[TopicPartition] = set()
        """Owned partitions per the rebalance callbacks (aiokafka's ``assignment()`` keeps the
        old partitions until a rebalance completes)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._dispatcher: Dispatcher | None = None
        self._kafka_refused: KafkaRefused | None = None
        self._decoder: Decoder | None = None
        """Decodes framed keys and values before planning, when a route reads a framed format."""

    def readiness(self) -> tuple[bool, str]:
        if self._kafka_refused is not None:
            return False, str(self._kafka_refused)
        if not self._joined:
            return False, "not yet in the Kafka consumer group"
        if not self.health.up:
            return False, f"Restate ingress unreachable: {self.health.reason}"
        missing = self._dispatcher.missing_reply_topics if self._dispatcher else {}
        if missing:
            return False, f"reply topic {', '.join(sorted(missing))} does not exist (retrying)"
        if self._decoder is not None and not self._decoder.up:
            return False, f"schema registry unreachable: {self._decoder.reason}"
        if self.health.down_nodes:  # still ready: the other nodes take the sends
            return True, f"consuming; ingress {self.health.reason}"
        return True, "consuming"

    @property
    def blocked(self) -> dict[TopicPartition, Blocked]:
        """Partitions stopped at a record that can never succeed, and why."""
        return {tp: blocked for tp, (blocked, _) in self._blocked.items()}

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start, consume until ``stop`` is set, then drain, commit and close (module docstring).

        ``stop`` set while starting (a slow broker, a group join held back) ends the start at
        once: nothing was fetched yet, so there is nothing to drain.
        """
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            consumer = await _unless_stopped(self._start(stack), stop)
            if consumer is None:
                log.info("stopped while starting")
                return
            self._consuming = True
            reloads = asyncio.create_task(self._reload_when_asked())
            try:
                await self._consume(consumer, stop)
            finally:
                self._consuming = False
                if self._swap is not None:  # asked for while the loop ended: never applied
                    self._swap.done.set_exception(NotRunning("the bridge is stopping"))
                    self._swap = None
                await _cancel(reloads)
            await self._shutdown(consumer)

    async def _start(self, stack: contextlib.AsyncExitStack) -> AIOKafkaConsumer:
        """Start every part in order; ``stack`` closes them in reverse order."""
        cfg = self.config
        await self.status.start()
        stack.push_async_callback(self.status.stop)

        urls = cfg.restate.ingress_urls
        # one client per ingress node, all alike (token, TLS, timeouts, pool size)
        clients = [
            await stack.enter_async_context(
                Client(
                    url,
                    token=self._token,
                    timeout=cfg.restate.request_timeout.total_seconds(),
                    max_connections=cfg.restate.max_connections,
                    ssl_context=ingress_ssl_context(cfg.restate),
                )
            )
            for url in urls
        ]
        attach_clients: list[Client] = []
        self._replies_ready = any(r.reply_topic for r in cfg.routes)
        if self._replies_ready:
            # waiting for results holds connections for as long as a handler runs: a pool of
            # their own, so that waiting replies never take the connections sends need
            attach_clients = [
                await stack.enter_async_context(
                    Client(
                        url,
                        token=self._token,
                        timeout=None,
                        max_connections=cfg.delivery.max_waiting_replies,
                        ssl_context=ingress_ssl_context(cfg.restate),
                    )
                )
                for url in urls
            ]
        if cfg.restate.token_file is not None:
            every = [*clients, *attach_clients]

            def set_token(token: str | None) -> None:
                for each in every:
                    each.set_token(token)

            token_file = TokenFile(cfg.restate.token_file, set_token, current=self._token)
            watch = asyncio.create_task(token_file.watch_forever())
            stack.push_async_callback(_cancel, watch)
        probe = asyncio.create_task(self.health.probe_forever(clients))
        stack.push_async_callback(_cancel, probe)
        self._decoder = await open_decoder(cfg, self.metrics, stack)

        try:  # a refused TLS handshake or SASL login is fatal: say why, once, before any retry
            await check_security(cfg.kafka)
        except KafkaRefused as exc:
            self._kafka_refused = exc
            raise

        dead_letters = replies = None
        if cfg.dead_letter.topic or attach_clients:
            producer = await self._started_producer()
            if cfg.dead_letter.topic:
                dead_letters = DeadLetterSink(producer, cfg.dead_letter.topic)
            if attach_clients:
                replies = ReplySink(producer, functools.partial(_cluster_topics, producer))

        tracer = None
        if cfg.tracing.spans:  # `check` made sure the otel extra is installed
            from .tracing.spans import RecordTracer

            tracer = RecordTracer(cfg.kafka.group_id)
        dispatcher = self._dispatcher = Dispatcher(
            client=clients,
            metrics=self.metrics,
            health=self.health,
            delivery=cfg.delivery,
            dead_letters=dead_letters,
            on_finished=self.record_finished,
            on_blocked=self.partition_blocked,
            on_dead_letter=self.dead_lettered,
            request_timeout=cfg.restate.request_timeout.total_seconds(),
            replies=replies,
            attach_client=attach_clients or None,
            tracer=tracer,
        )
        stack.push_async_callback(dispatcher.aclose)
        dispatcher.configure_routes(cfg.routes)
        dispatcher.set_paused(self.controls.paused_routes, self.controls.paused_topics)

        consumer = self._consumer = AIOKafkaConsumer(
            **kafka_options(cfg.kafka),
            group_id=cfg.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.kafka.auto_offset_reset,
            isolation_level=cfg.kafka.isolation_level,
            session_timeout_ms=cfg.kafka.session_timeout_ms,
            metadata_max_age_ms=cfg.kafka.metadata_max_age_ms,
            heartbeat_interval_ms=max(100, cfg.kafka.session_timeout_ms // 3),
            fetch_max_bytes=cfg.kafka.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.kafka.max_partition_fetch_bytes,
        )
        self._subscribe(consumer, cfg)
        stack.push_async_callback(consumer.stop)
        await consumer.start()
        topics = cfg.topic_pattern or list(cfg.topics)
        log.info("consuming %s as group %s", topics, cfg.kafka.group_id)
        return consumer

    def _subscribe(self, consumer: AIOKafkaConsumer, cfg: BridgeConfig) -> None:
        listener = _Rebalance(self)
        if cfg.topic_pattern:
            consumer.subscribe(pattern=cfg.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(cfg.topics), listener=listener)

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        delivery = self.config.delivery
        interval = delivery.commit_interval.total_seconds()
        next_commit = time.monotonic() + interval
        while not stop.is_set():
            if self._swap is not None:  # between two fetches: no record is half planned
                await self._swap_in(consumer, self._swap)
            capacity = delivery.max_pending_records - self.tracker.in_progress
            registry_up = self._decoder is None or self._decoder.up
            self._flow_control(consumer, capacity > 0 and self.health.up and registry_up)
            batches = await consumer.getmany(timeout_ms=100, max_records=max(capacity, 1))
            if self._decoder is not None and batches:
                await self._decoder.prepare(m for msgs in batches.values() for m in msgs)
            for tp, msgs in batches.items():
                self._take(consumer, tp, msgs)
            self.metrics.pending_records.set(self.tracker.in_progress)
            if time.monotonic() >= next_commit:
                await self._commit(consumer)
                await self._update_partition_gauges(consumer)
                next_commit = time.monotonic() + interval

    async def _shutdown(self, consumer: AIOKafkaConsumer) -> None:
        """The staged drain: stop fetching, wait for in-flight sends (up to ``drain_timeout``),
        commit, cancel what is left."""
        self._flow_control(consumer, False)
        unblocked = {tp for tp in self.tracker.partitions if tp not in self._blocked}
        log.info("stopping: draining %d unfinished records", self.tracker.in_progress)
        if self._dispatcher is not None:
            self._dispatcher.flush()  # open batches go now, not after their max_wait
        drained = await self._drain(unblocked)
        if not drained:
            log.warning("drain timed out; committing what finished, the rest is redelivered")
        elif waiting := self.tracker.in_progress_of(unblocked):
            log.info("%d records wait for an operator's pause; they are read again", waiting)
        await self._commit(consumer)
        if self._dispatcher is not None:
            await self._dispatcher.aclose()

    # -- reload ----------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload the routing file soon (the SIGHUP handler: it only sets a flag; several
        signals during one reload make one more reload after it)."""
        self._reload_wanted.set()

    async def _reload_when_asked(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reloader.reload("SIGHUP")

    async def admin_reload(self) -> tuple[int, dict[str, Any]]:
        """``POST /admin/reload``: refused with 409 while another reload runs."""
        report = await self.reloader.reload("admin", wait=False)
        return report.answer()

    async def reload_routes(self, config: BridgeConfig, changes: ConfigDiff) -> None:
        """Run ``config``'s routes from the consume loop's next turn; returns once they run.

        Raises :class:`CannotApply` (routes this process cannot add without a restart) or
        :class:`NotRunning` before anything changed.
        """
        if not self._consuming:
            raise NotRunning("the bridge is starting or stopping; reload when it consumes")
        problems = unrunnable(config, replies=self._replies_ready)
        if problems:
            raise CannotApply(problems)
        swap = self._swap = _Swap(config, changes, asyncio.get_running_loop().create_future())
        await swap.done

    async def _swap_in(self, consumer: AIOKafkaConsumer, swap: _Swap) -> None:
        """Run the new routes (the consume loop awaits this: nothing is fetched meanwhile)."""
        self._swap = None
        try:
            await self._use_routes(consumer, swap.config, swap.changes)
        except asyncio.CancelledError:  # a forced exit: the reload waiting must not hang
            swap.done.set_exception(NotRunning("the bridge is stopping"))
            raise
        except Exception as exc:  # the reload reports it; the loop goes on
            swap.done.set_exception(exc)
        else:
            swap.done.set_result(None)

    async def _use_routes(
        self, consumer: AIOKafkaConsumer, config: BridgeConfig, changes: ConfigDiff
    ) -> None:
        assert self._dispatcher is not None
        assert self._stack is not None
        decoder = self._decoder
        if decoder is None and uses_registry(config):  # the first route with a framed format
            decoder = await open_decoder(config, self.metrics, self._stack)
        if changes.subscription_changed:
            # once subscribed anew, aiokafka commits nothing of the old partitions: the
            # revocation that follows could not commit what finished, so drain and commit now
            self._flow_control(consumer, False)
            self._dispatcher.flush()
            unblocked = {tp for tp in self.tracker.partitions if tp not in self._blocked}
            log.info(
                "reload: the topics change; draining %d unfinished records before subscribing",
                self.tracker.in_progress_of(unblocked),
            )
            if not await self._drain(unblocked):
                log.warning(
                    "reload: drain timed out; the unfinished records are read again after the "
                    "rebalance and planned with the new routes"
                )
            await self._commit(consumer)
        else:
            # an open batch holds invocations planned by the old route: it closes now, as planned
            self._dispatcher.flush(changes.stale_routes)
        # from here on every record is planned by the new routes
        switch = (self.config.topic_pattern is None) != (config.topic_pattern is None)
        self.config = config
        self.router = Router(config)
        self._prepare_metrics(config)
        self._dispatcher.configure_routes(config.routes)
        self.apply_controls()  # which partitions a pause stops depends on who reads them
        if decoder is not None:
            decoder.use_formats(route_formats(config.routes))
            self._decoder = decoder
        if changes.subscription_changed:
            if switch:  # aiokafka refuses to go from topics to a pattern or back
                consumer.unsubscribe()
            self._subscribed_anew = True
            self._subscribe(consumer, config)
            topics = config.topic_pattern or list(config.topics)
            log.info("reload: consuming %s as group %s", topics, config.kafka.group_id)

    def _prepare_metrics(self, config: BridgeConfig) -> None:
        """Every route's series at 0 (a reload's new routes too; a removed route's stay)."""
        self.metrics.prepare((r.name, r.topics) for r in config.routes)
        self.metrics.prepare_replies(r.name for r in config.routes if r.reply_topic)
        self.metrics.prepare_batches(r.name for r in config.routes if r.batch)

    # -- records ---------------------------------------------------------------------------

    def _take(self, consumer: AIOKafkaConsumer, tp: TopicPartition, msgs: Sequence[Any]) -> None:
        """Handle one partition's fetched records, up to ``max_pending_per_partition`` records
        not yet committable; seek back to the first one left over, so Kafka keeps it."""
        if tp not in self._assigned:  # being revoked: the next owner reads it from the commit
            return
        if not self.router.routes_for(tp.topic):
            # a topic a reload removed, fetched before its revocation: leave it uncommitted
            return
        if tp in self._blocked or tp in self._operator_paused:  # fetched before the pause
            room = 0
        else:
            room = self.config.delivery.max_pending_per_partition - self.tracker.uncommittable(tp)
        taken = 0
        for msg in msgs[: max(room, 0)]:
            if not self._handle(msg):  # its schema is not to be had now: it waits in Kafka
                break
            taken += 1
        if taken < len(msgs):
            with contextlib.suppress(KafkaError):  # IllegalStateError: revoked meanwhile
                consumer.seek(tp, msgs[taken].offset)

    def _track(self, tp: TopicPartition, offset: int) -> PartitionOffsets:
        try:
            return self.tracker.add(tp, offset, self._clock())
        except ValueError as exc:
            forgotten = self.tracker.restart(tp)
            log.warning(
                "%s: %s: the partition's offsets went backwards (log truncated or offset reset); "
                "tracking it afresh from here (%d unfinished records before no longer hold its "
                "commit)",
                coordinates(tp.topic, tp.partition, offset),
                exc,
                forgotten,
            )
            return self.tracker.add(tp, offset, self._clock())

    def _handle(self, msg: Any) -> bool:
        """Plan one record and submit its invocations; nothing a record holds stops the loop.
        False when it cannot be handled yet (a schema registry outage): it was not taken."""
        tp = TopicPartition(msg.topic, msg.partition)
        record = _record(msg)
        if self._decoder is not None:
            decoded = self._decoder.decode(record)
            if decoded is None:
                return False
            record = decoded
        owner = self._track(tp, msg.offset)
        order = self.controls.take_skip(tp, msg.offset)
        items: Sequence[Invocation | Poison | Skip]
        try:
            items = self.router.plan(record)
        except Exception as exc:  # plan never raises by contract: a bug must not stop the loop
            log.exception(
                "%s: internal error while routing; dead-lettering the record", record.coordinates
            )
            items = [Poison("", f"internal error while routing: {type(exc).__name__}: {exc}")]
        if not items:
            self.metrics.messages.labels(msg.topic, "", "unrouted").inc()
            self.tracker.finish(tp, msg.offset, owner)
            return True
        sendable: list[Invocation | Poison] = []
        for item in items:
            if isinstance(item, Skip):
                self.metrics.messages.labels(msg.topic, item.route, "skipped").inc()
                continue
            if isinstance(item, Invocation) and item.trace_dropped:
                self._trace_dropped(record, item)
            sendable.append(item)
        if not sendable:
            self.tracker.finish(tp, msg.offset, owner)
            return True
        pending = PendingRecord(record, tp, len(sendable), owner)
        try:
            assert self._dispatcher is not None
            for item in sendable:
                if order is not None and order.applies_to(item.route):
                    park = functools.partial(
                        self._parking.park,
                        record,
                        item.route,
                        order.blocked_by,
                        order.reason,
                        order.topic,
                    )
                    self._dispatcher.submit_skip(pending, item.route, park)
                else:
                    self._dispatcher.submit(pending, item)
        except Exception as exc:  # a bug: the record cannot finish, so block visibly
            log.exception("%s: internal error while submitting the record", record.coordinates)
            reason = f"internal error while submitting: {type(exc).__name__}: {exc}"
            self.partition_blocked(Blocked(tp, msg.offset, "", reason))
        return True

    def _trace_dropped(self, record: Record, inv: Invocation) -> None:
        """Count and log trace headers left out: tracing is best effort, the record goes on."""
        self.metrics.trace_context_dropped.labels(inv.route).inc(len(inv.trace_dropped))
        for reason in inv.trace_dropped:
            log.debug(
                "%s: route %s: trace header not forwarded: %s",
                record.coordinates,
                inv.route,
                reason,
            )

    # -- dispatcher callbacks --------------------------------------------------------------

    def record_finished(self, pending: PendingRecord) -> None:
        """Every invocation of ``pending`` was accepted or dead-lettered."""
        self.tracker.finish(pending.tp, pending.record.offset, pending.owner)
        self._progress.set()

    def partition_blocked(self, blocked: Blocked) -> None:
        """``blocked.tp`` stops at a record that can never succeed: pause it until the operator
        releases it (reported at its lowest blocked offset: the one that holds the commit)."""
        tp = blocked.tp
        known = self._blocked.get(tp)
        if known is not None and known[0].offset < blocked.offset:
            return
        since = self._clock() - self.tracker.oldest_unfinished_age(tp, self._clock())
        self._blocked[tp] = (blocked, since)
        if tp in self._assigned:
            self.metrics.partition_blocked.labels(tp.topic, str(tp.partition)).set(1)

    def dead_lettered(self, letter: DeadLetter) -> None:
        self.dead_letters.add(letter)

    # -- the operator's controls (the admin API calls these) --------------------------------

    def pause(self, kind: ControlKind, name: str, paused: bool) -> dict[str, Any]:
        """Pause (``paused``) or resume a route or a topic: its jobs wait before taking any
        slot, and the partitions only paused routes read (or of a paused topic) stop fetching.
        Pausing twice is fine. Raises :class:`UnknownName`."""
        routes = self.config.routes
        if kind == "route":
            known = [r.name for r in routes]
            if name not in known:
                raise UnknownName("route", name, known)
            gauge = self.metrics.route_paused.labels(name)
        else:
            if not readers(name, routes):
                raise UnknownName("topic", name, self._known_topics())
            gauge = self.metrics.topic_paused.labels(name)
        changed = self.controls.set_paused(kind, name, paused)
        gauge.set(1 if paused else 0)
        if changed:
            log.info("%s %s %s by the operator", kind, name, "paused" if paused else "resumed")
            self.apply_controls()
        return {
            kind: name,
            "paused": paused,
            "changed": changed,
            "paused_partitions": _partitions(self._operator_paused),
        }

    async def release(self, tp: TopicPartition, request: ReleaseRequest) -> dict[str, Any]:
        """Release blocked partition ``tp``: retry its blocking record now, or skip it (to a
        topic, or only logged). Raises :class:`bridge.core.controls.ControlError`."""
        dispatcher = self._dispatcher
        held = dispatcher.held(tp) if dispatcher is not None else []
        reported = self._blocked.get(tp)
        where = where_blocked(
            tp,
            reported=reported is not None,
            held=len(held),
            unfinished=self.tracker.in_progress_of({tp}),
        )
        to = request.topic if isinstance(request, ReleaseSkip) else None
        if to is not None and (names := readers(to, self.config.routes)):
            raise BadRequest(
                f"topic {to!r} is read by route {', '.join(names)}: the skipped record would "
                "be read again; skip it to a topic no route reads"
            )
        if where == "held":
            assert dispatcher is not None

            async def park(helds: Sequence[Held]) -> None:
                assert isinstance(request, ReleaseSkip)
                for each in helds:
                    for record in each.records:
                        await self._parking.park(
                            record, each.route, each.reason, request.reason, request.topic
                        )

            released = await dispatcher.release(
                tp, request.action, park if isinstance(request, ReleaseSkip) else None
            )
            offset, route = released[0].offset, released[0].route
            self._blocked_again(tp, dispatcher.held(tp))
        else:
            assert reported is not None
            blocked = reported[0]
            offset, route = blocked.offset, blocked.route
            if isinstance(request, ReleaseSkip):
                if request.topic is not None:
                    await self._parking.check(request.topic)
                order = SkipOrder(route, blocked.reason, request.reason, request.topic)
                self.controls.order_skip(tp, offset, order)
            self._blocked_again(tp, [])
        self.controls.note(tp, offset, route, request)
        self.metrics.releases.labels(request.action).inc()
        log.info(
            "partition %s-%d released by the operator at offset %d: %s (route %s)%s%s",
            tp.topic,
            tp.partition,
            offset,
            request.action,
            route,
            f": {request.reason}" if request.reason else "",
            "" if where == "held" else " (its job was gone: the record is fetched again)",
        )
        return {
            "topic": tp.topic,
            "partition": tp.partition,
            "offset": offset,
            "route": route,
            "action": request.action,
            "to": to,
            "refetch": where == "gone",
            "still_blocked": tp in self._blocked,
        }

    def _blocked_again(self, tp: TopicPartition, held: Sequence[Held]) -> None:
        """After a release: report ``tp`` at the lowest job still held there, or unblocked."""
        if held:
            first = held[0]
            since = self._blocked[tp][1] if tp in self._blocked else self._clock()
            self._blocked[tp] = (Blocked(tp, first.offset, first.route, first.reason), since)
            return
        self._blocked.pop(tp, None)
        if tp in self._assigned:
            self.metrics.partition_blocked.labels(tp.topic, str(tp.partition)).set(0)

    def controls_view(self) -> dict[str, Any]:
        """The ``controls`` object of ``/status.json``."""
        blocked = {
            tp: (b.offset, b.route, b.reason, tp in self._assigned)
            for tp, (b, _) in self._blocked.items()
        }
        view = self.controls.view(
            topics=self._known_topics(literal=True),
            paused_partitions=self._operator_paused & self._assigned,
            blocked=blocked,
        )
        last = self.reloader.last
        view["last_reload"] = None if last is None else last.as_json()
        return view

    def _known_topics(self, literal: bool = False) -> list[str]:
        """The configured topics and those owned now (a pattern's); with the patterns unless
        ``literal``."""
        names = set(self.config.topics) | {tp.topic for tp in self._assigned}
        if not literal:
            names |= {r.topic_pattern.pattern for r in self.config.routes if r.topic_pattern}
        return sorted(names)

    def _fetch_paused(self, owned: set[TopicPartition]) -> set[TopicPartition]:
        c = self.controls
        return fetch_paused(owned, self.config.routes, c.paused_routes, c.paused_topics)

    def apply_controls(self) -> None:
        """Hand the pauses to the dispatcher (jobs wait or go) and to flow control (which stops
        or resumes fetching at the next turn of the consume loop). Call it again whenever the
        routes change (a reload): which partitions a pause stops depends on who reads them."""
        c = self.controls
        if self._dispatcher is not None:
            self._dispatcher.set_paused(c.paused_routes, c.paused_topics)
        self._operator_paused = self._fetch_paused(self._assigned)
        for tp in self._assigned:
            paused = 1 if tp in self._operator_paused else 0
            self.metrics.partition_paused.labels(tp.topic, str(tp.partition)).set(paused)

    async def _started_producer(self) -> AIOKafkaProducer:
        """The producer (dead letters, replies, skipped records), started on first use; the
        exit stack of :meth:`run` stops it."""
        async with self._producer_lock:
            if self._producer is None:
                if self._stack is None:
                    raise RuntimeError("the bridge is not running")
                producer = AIOKafkaProducer(**kafka_options(self.config.kafka), acks="all")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._stack.push_async_callback(producer.stop)
                self._producer = producer
            return self._producer

    async def _cluster_topics(self) -> set[str]:
        return await _cluster_topics(await self._started_producer())

    # -- rebalance callbacks ---------------------------------------------------------------

    async def partitions_revoked(self, tps: set[TopicPartition]) -> None:
        """Drain and commit what ``tps`` finished, then forget them (a blocked one stays known)."""
        if not tps:
            return
        consumer = self._consumer
        assert consumer is not None
        assert self._dispatcher is not None
        unblocked = {tp for tp in tps if tp not in self._blocked}
        log.info("partitions revoked: %s; draining", sorted(tps))
        # the consume loop goes on while this callback awaits: nothing more of ``tps`` is
        # fetched or taken, or a record sent after the commit below would be sent again by
        # the next owner
        self._assigned -= tps
        # after a reload subscribed anew, aiokafka has dropped the old partitions (pausing one
        # would fail an assertion): nothing of them is fetched any more anyway
        with contextlib.suppress(KafkaError):  # IllegalStateError: no longer assigned
            consumer.pause(*(tps & consumer.assignment()))
        self._dispatcher.flush()
        await self._drain(unblocked)
        await self._commit(consumer, only=tps)
        self._dispatcher.drop(tps)
        self.tracker.forget(tps)
        self._paused -= tps
        self._operator_paused -= tps
        for tp in tps:
            for gauge in self.metrics.partition_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    def partitions_assigned(self, tps: set[TopicPartition]) -> None:
        """Own ``tps``; a partition blocked earlier in this process stays paused and reported,
        and one the operator's pauses stop is paused too, before anything of it is fetched."""
        self._joined = True
        self._subscribed_anew = False
        self._assigned = set(tps)
        log.info("partitions assigned: %s", sorted(tps))
        self._operator_paused = self._fetch_paused(tps)
        held = tps & self._blocked.keys()
        # a fresh assignment has nothing paused; pause the held ones before anything is fetched
        self._paused = held | self._operator_paused
        if self._paused and self._consumer is not None:
            self._consumer.pause(*self._paused)
        for tp in sorted(tps):
            paused = 1 if tp in self._operator_paused else 0
            self.metrics.partition_paused.labels(tp.topic, str(tp.partition)).set(paused)
        if self._operator_paused:
            log.info("partitions %s stay paused by the operator", sorted(self._operator_paused))
        for tp in sorted(held):
            blocked, _ = self._blocked[tp]
            self.metrics.partition_blocked.labels(tp.topic, str(tp.partition)).set(1)
            log.error(
                "partition %s-%d stays blocked at offset %d: route %s: %s (assigned again to "
                "this process; fix the cause, then release it: POST "
                "/admin/partitions/%s/%d/release)",
                tp.topic,
                tp.partition,
                blocked.offset,
                blocked.route,
                blocked.reason,
                tp.topic,
                tp.partition,
            )

    # -- flow control ----------------------------------------------------------------------

    def _flow_control(self, consumer: AIOKafkaConsumer, fetch: bool) -> None:
        """Pause fetching everywhere (``fetch`` false), or only on the partitions that are
        blocked, hold ``max_pending_per_partition`` records not yet committable, or are paused by
        the operator; resume the rest."""
        # the callbacks' view of ownership: consumer.assignment() lags behind a revocation
        assigned = self._assigned
        if self._subscribed_anew:  # aiokafka forgot the old partitions before the callback ran
            assigned = assigned & consumer.assignment()
        if fetch:
            full = self.tracker.full(self.config.delivery.max_pending_per_partition)
            want_paused = assigned & (self._blocked.keys() | full | self._operator_paused)
        else:
            want_paused = set(assigned)
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
        """Commit what finished; a failure is counted, logged and retried at the next interval."""
        positions = self.tracker.to_commit(only)
        if not positions:
            return
        try:
            await consumer.commit(positions)
        except KafkaError as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("commit of %s failed: %s", positions, exc)
            return
        except Exception:  # anything else must not end the run loop either
            self.metrics.commits.labels("failed").inc()
            log.exception("commit of %s failed unexpectedly", positions)
            return
        self.tracker.committed(positions)
        self.metrics.commits.labels("ok").inc()
        for tp, pos in positions.items():
            self.metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(pos)

    async def _update_partition_gauges(self, consumer: AIOKafkaConsumer) -> None:
        """Lag (from the position and from the committed offset) and the oldest unfinished
        record's age of every owned partition. A partition revoked meanwhile is skipped."""
        metrics = self.metrics
        for tp in sorted(self._assigned):
            if tp not in self._assigned:  # revoked while an earlier partition was awaited
                continue
            labels = (tp.topic, str(tp.partition))
            now = self._clock()
            age = self.tracker.oldest_unfinished_age(tp, now)
            if tp in self._blocked:  # its blocked record stays unfinished, also after revocation
                age = max(age, now - self._blocked[tp][1])
            metrics.oldest_unfinished_age.labels(*labels).set(age)
            if tp not in consumer.assignment():  # aiokafka's view moved on already
                continue
            # tansu's ListOffsets(latest) is wrong; the Fetch high watermark is right on both
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), LAG_QUERY_TIMEOUT)
            except (TimeoutError, KafkaError) as exc:  # IllegalStateError: revoked meanwhile
                log.debug("no position for %s: %r", tp, exc)
                continue
            if tp not in self._assigned:  # revoked meanwhile: its gauges are gone, keep it so
                continue
            metrics.consumer_lag.labels(*labels).set(max(0, highwater - position))
            committed = self._committed_position(tp, position)
            metrics.committed_lag.labels(*labels).set(max(0, highwater - committed))

    def _committed_position(self, tp: TopicPartition, position: int) -> int:
        """The group's committed offset as far as this process knows it: what it committed, or
        where its fetching started (the committed offset it was assigned), or the position."""
        part = self.tracker.partition(tp)
        if part is None:
            return position  # nothing fetched (or paused since assignment): position = committed
        if part.committed is not None:
            return part.committed
        return part.first_fetched if part.first_fetched is not None else position

    def _unsettled(self, tps: set[TopicPartition]) -> bool:
        """Whether records of ``tps`` may still finish on their own: jobs that wait for the
        operator (a pause, a block) will not, and a drain does not wait for them."""
        if self.tracker.in_progress_of(tps) == 0:
            return False
        return self._dispatcher is None or self._dispatcher.unsettled(tps) > 0

    async def _drain(self, tps: set[TopicPartition]) -> bool:
        deadline = time.monotonic() + self.config.delivery.drain_timeout.total_seconds()
        while self._unsettled(tps):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
        return True
