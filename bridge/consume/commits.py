"""Committing what finished, and the per-partition gauges (lag, committed lag, oldest age).

An offset is committed only after the ingress accepted that record and every earlier one (the
book's :class:`~bridge.core.offsets.OffsetTracker` keeps the contiguous watermark). A failed
commit is counted, logged and tried again at the next interval; it never ends the run loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka.errors import KafkaError

from ..core.offsets import TopicPartition
from ..operate.metrics import Metrics
from .book import PartitionBook
from .port import ConsumerPort

log = logging.getLogger(__name__)

LAG_QUERY_TIMEOUT = 0.5
"""Seconds to wait for one partition's position in the lag update (it may need a round trip)."""


class Committer:
    """Commits and measures the owned partitions."""

    def __init__(
        self,
        consumer: ConsumerPort,
        book: PartitionBook,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._consumer = consumer
        self._book = book
        self._metrics = metrics
        self._clock = clock

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what finished; a failure is counted, logged and retried at the next interval.

        A partition with nothing unfinished commits the consumer's position, which is past
        the markers that end every Kafka transaction and past aborted records (neither ever
        reaches the bridge): an idle transactional topic reaches zero committed lag."""
        tracker = self._book.tracker
        await self._follow_positions(only)
        positions = tracker.to_commit(only)
        if not positions:
            return
        try:
            await self._consumer.commit(positions)
        except KafkaError as exc:
            self._metrics.commits.labels("failed").inc()
            log.warning("commit of %s failed: %s", positions, exc)
            return
        except Exception:  # anything else must not end the run loop either
            self._metrics.commits.labels("failed").inc()
            log.exception("commit of %s failed unexpectedly", positions)
            return
        tracker.committed(positions)
        self._metrics.commits.labels("ok").inc()
        for tp, pos in positions.items():
            self._metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(pos)

    async def _follow_positions(self, only: set[TopicPartition] | None) -> None:
        book, consumer = self._book, self._consumer
        idle = [
            tp
            for tp, part in book.tracker.partitions.items()
            if part.uncommittable == 0 and book.owns(tp)  # nothing fetched is unfinished
        ]
        for tp in idle:
            if (only is not None and tp not in only) or tp not in consumer.assignment():
                continue
            position = await self._position(tp)
            if position is not None:  # the loop takes no record meanwhile
                book.tracker.passed(tp, position)

    async def update_gauges(self) -> None:
        """Lag (from the position and from the committed offset) and the oldest unfinished
        record's age of every owned partition. A partition revoked meanwhile is skipped."""
        book, consumer, metrics = self._book, self._consumer, self._metrics
        for tp in sorted(book.owned):
            if not book.owns(tp):  # revoked while an earlier partition was awaited
                continue
            labels = (tp.topic, str(tp.partition))
            now = self._clock()
            age = book.tracker.oldest_unfinished_age(tp, now)
            since = book.blocked_since(tp)
            if since is not None:  # its blocked record stays unfinished, also after revocation
                age = max(age, now - since)
            metrics.oldest_unfinished_age.labels(*labels).set(age)
            if tp not in consumer.assignment():  # aiokafka's view moved on already
                continue
            # tansu's ListOffsets(latest) is wrong; the Fetch high watermark is right on both
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._position(tp)
            # revoked meanwhile: its gauges are gone, keep it so
            if position is None or not book.owns(tp):
                continue
            metrics.consumer_lag.labels(*labels).set(max(0, highwater - position))
            committed = self._committed_position(tp, position)
            metrics.committed_lag.labels(*labels).set(max(0, highwater - committed))

    async def _position(self, tp: TopicPartition) -> int | None:
        """The consumer's position in ``tp``, or ``None`` when it cannot say at once."""
        try:
            return await asyncio.wait_for(self._consumer.position(tp), LAG_QUERY_TIMEOUT)
        except (TimeoutError, KafkaError) as exc:  # IllegalStateError: revoked meanwhile
            log.debug("no position for %s: %r", tp, exc)
            return None

    def _committed_position(self, tp: TopicPartition, position: int) -> int:
        """The group's committed offset as far as this process knows it: what it committed, or
        where its fetching started (the committed offset it was assigned), or the position."""
        part = self._book.tracker.partition(tp)
        if part is None:
            return position  # nothing fetched (or paused since assignment): position = committed
        if part.committed is not None:
            return part.committed
        return part.first_fetched if part.first_fetched is not None else position
