"""The Kafka side at work: the consume loop, the rebalance callbacks, and the one drain.

The loop fetches, plans and submits; it commits and updates the per-partition gauges every
``commit_interval``. Between two fetches it runs whatever waits for it (a reload's swap), so no
record is ever half planned. Revocation, shutdown and a reload that changes the topics all
settle the same way (:meth:`KafkaSide.settle`): stop fetching, flush open batches, wait for
in-flight sends (up to ``drain_timeout``), commit. Records that wait for the operator (a pause,
a block) do not hold a drain up: they are read again by whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from ..config import BridgeConfig
from ..config.diff import ConfigDiff
from ..core.controls import Controls
from ..core.offsets import TopicPartition
from ..deliver.health import IngressHealth
from ..deliver.ports import Delivery
from ..operate.metrics import Metrics
from ..schemas.decoder import Decoder, route_formats
from ..schemas.setup import uses_registry
from ..sinks.parking import Parking
from .book import PartitionBook
from .commits import Committer
from .flow import FlowControl
from .intake import Deployed, Intake
from .port import ConsumerPort
from .routes import RoutesInForce

log = logging.getLogger(__name__)


class KafkaSide:
    """The consumer's side of the bridge; implements :class:`~bridge.consume.port.Rebalances`."""

    def __init__(
        self,
        *,
        consumer: ConsumerPort,
        book: PartitionBook,
        delivery: Delivery,
        routes: RoutesInForce,
        controls: Controls,
        parking: Parking,
        metrics: Metrics,
        health: IngressHealth,
        clock: Callable[[], float] = time.monotonic,
        decoder: Decoder | None = None,
        windows: Deployed | None = None,
    ) -> None:
        self.consumer = consumer
        self.book = book
        self.delivery = delivery
        self.routes = routes
        self._metrics = metrics
        self._health = health
        self.flow = FlowControl(consumer, book, controls, routes, metrics)
        self.intake = Intake(
            routes=routes,
            book=book,
            delivery=delivery,
            controls=controls,
            parking=parking,
            metrics=metrics,
            decoder=decoder,
            windows=windows,
        )
        self.committer = Committer(consumer, book, metrics, clock)
        self.joined = False
        """Assigned partitions once at least (the group was joined)."""

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, between: Callable[[], Awaitable[None]]) -> None:
        """Fetch, plan, submit and commit until ``stop`` is set; ``between`` runs before each
        fetch."""
        interval = self.routes.config.delivery.commit_interval.total_seconds()
        next_commit = time.monotonic() + interval
        while not stop.is_set():
            await between()
            await self.turn()
            if time.monotonic() >= next_commit:
                await self.committer.commit()
                await self.committer.update_gauges()
                next_commit = time.monotonic() + interval

    async def turn(self) -> None:
        """One fetch: flow control, then the records fetched, planned and submitted."""
        tracker, decoder = self.book.tracker, self.intake.decoder
        capacity = self.routes.config.delivery.max_pending_records - tracker.in_progress
        registry_up = decoder is None or decoder.up
        self.flow.apply(capacity > 0 and self._health.up and registry_up)
        batches = await self.consumer.getmany(timeout_ms=100, max_records=max(capacity, 1))
        if decoder is not None and batches:
            await decoder.prepare(m for msgs in batches.values() for m in msgs)
        for tp, msgs in batches.items():
            self.intake.take(self.consumer, tp, msgs)
        self._metrics.pending_records.set(tracker.in_progress)

    # -- reloads ---------------------------------------------------------------------------

    async def use_routes(
        self,
        config: BridgeConfig,
        changes: ConfigDiff,
        open_decoder: Callable[[BridgeConfig], Awaitable[Decoder | None]],
    ) -> None:
        """Plan every record from now on with ``config``'s routes (the loop calls this between
        two fetches). When the topics change, settle first and subscribe anew after: once
        subscribed anew, aiokafka commits nothing of the old partitions, so the revocation that
        follows could not commit what finished. ``open_decoder`` makes the decoding stage for
        the first route with a framed format."""
        decoder = self.intake.decoder
        if decoder is None and uses_registry(config):
            decoder = await open_decoder(config)
        if changes.subscription_changed:
            log.info(
                "reload: the topics change; draining %d unfinished records before subscribing",
                self.book.tracker.in_progress,
            )
            if not await self.settle():
                log.warning(
                    "reload: drain timed out; the unfinished records are read again after the "
                    "rebalance and planned with the new routes"
                )
        else:
            # an open batch holds invocations planned by the old route: it closes now, as planned
            self.delivery.flush(changes.stale_routes)
        # from here on every record is planned by the new routes
        switch = (self.routes.config.topic_pattern is None) != (config.topic_pattern is None)
        self.routes.use(config)
        self.delivery.configure_routes(config.routes)
        if decoder is not None:
            decoder.use_formats(route_formats(config.routes))
            self.intake.decoder = decoder
        if changes.subscription_changed:
            if switch:  # aiokafka refuses to go from topics to a pattern or back
                self.consumer.unsubscribe()
            self.flow.subscribed_anew = True
            self.consumer.subscribe(config, self)
            topics = config.topic_pattern or list(config.topics)
            log.info("reload: consuming %s as group %s", topics, config.kafka.group_id)

    # -- settling --------------------------------------------------------------------------

    async def settle(self, tps: set[TopicPartition] | None = None) -> bool:
        """Stop fetching (``tps``, or everything), flush the open batches, wait for in-flight
        sends up to ``drain_timeout``, commit (``tps``' offsets, or all). False when the drain
        timed out (what finished is committed; the rest is read again)."""
        if tps is None:
            self.flow.apply(False)
            draining = set(self.book.tracker.partitions)
        else:
            draining = tps
            # after a reload subscribed anew, aiokafka has dropped the old partitions (pausing
            # one would fail an assertion): nothing of them is fetched any more anyway
            with contextlib.suppress(KafkaError):  # IllegalStateError: no longer assigned
                self.consumer.pause(*sorted(tps & self.consumer.assignment()))
        self.delivery.flush()
        drained = await self._drain(draining)
        await self.committer.commit(only=tps)
        return drained

    def unsettled(self, tps: set[TopicPartition]) -> bool:
        """Whether records of ``tps`` may still finish on their own: jobs that wait for the
        operator (a pause, a block) will not, and a drain does not wait for them."""
        if self.book.tracker.in_progress_of(tps) == 0:
            return False
        return self.delivery.unsettled(tps) > 0

    async def _drain(self, tps: set[TopicPartition]) -> bool:
        timeout = self.routes.config.delivery.drain_timeout.total_seconds()
        deadline = time.monotonic() + timeout
        progress = self.book.progress
        while self.unsettled(tps):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), min(remaining, 0.5))
        return True

    # -- rebalances ------------------------------------------------------------------------

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """Drain and commit what ``tps`` finished, then end their leases and forget them (a
        blocked one stays known)."""
        if not tps:
            return
        log.info("partitions revoked: %s; draining", sorted(tps))
        leases = [lease for tp in tps if (lease := self.book.lease(tp)) is not None]
        # the consume loop goes on while this callback awaits: nothing more of ``tps`` is
        # fetched or taken, or a record sent after the commit below would be sent again by
        # the next owner
        self.book.disown(tps)
        await self.settle(tps)
        self.book.end(tps, leases)

    def assigned(self, tps: set[TopicPartition]) -> None:
        """Own ``tps``; a partition blocked earlier in this process stays paused and reported,
        and one the operator's pauses stop is paused too, before anything of it is fetched."""
        self.joined = True
        log.info("partitions assigned: %s", sorted(tps))
        self.book.assign(tps)
        self.flow.assigned()
        self.flow.apply(True)
        if stopped := self.book.operator_paused:
            log.info("partitions %s stay paused by the operator", sorted(stopped))
        for tp, blocked in self.book.all_blocked().items():
            if tp not in tps:
                continue
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
