"""Where a record the operator skips goes (a release of its blocked partition with ``skip``): a
topic of their choosing, or only the log.

Produced to a topic, it is encoded as a dead letter
(:func:`bridge.sinks.deadletter.dead_letter_message`:
the same key, value and headers plus ``bridge.*`` headers), with ``bridge.error`` saying why it
was blocked and ``bridge.skip_reason`` why the operator skipped it. The bridge never creates the
topic: one that does not exist is refused before anything is produced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from ..core.controls import CannotPark
from ..core.record import Record
from .deadletter import DeadLetter, DeadLetterSink, Producer

log = logging.getLogger(__name__)

PARK_TIMEOUT = 15.0
"""Seconds a check of the topic, or the produce, may take before the release is refused."""


class Parking:
    """Skips records: produces them to a topic, or logs them.

    ``producer`` gives the (started) producer, made on first use when the bridge has none;
    ``topics`` lists the cluster's topics by a metadata request that never creates one.
    """

    def __init__(
        self,
        producer: Callable[[], Awaitable[Producer]],
        topics: Callable[[], Awaitable[set[str]]],
        timeout: float = PARK_TIMEOUT,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._timeout = timeout

    async def check(self, topic: str) -> None:
        """Raise :class:`CannotPark` unless ``topic`` exists."""
        try:
            existing = await asyncio.wait_for(self._topics(), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise CannotPark(
                f"cannot list the cluster's topics to find {topic!r}: {exc!r}"
            ) from exc
        if topic not in existing:
            raise CannotPark(
                f"topic {topic!r} does not exist; create it first (the bridge never creates "
                "topics), or skip without a topic to only log the record"
            )

    async def park(
        self, record: Record, route: str, blocked_by: str, reason: str, topic: str | None
    ) -> None:
        """Produce ``record`` to ``topic`` (acks from all in-sync replicas) or, without one, log
        it at WARNING with its coordinates. Raises :class:`CannotPark` when it cannot be
        produced; then nothing was skipped."""
        if topic is None:
            log.warning(
                "%s: record skipped by the operator: route %s: %s (it was blocked by: %s); not "
                "sent, only logged",
                record.coordinates,
                route,
                reason,
                blocked_by,
            )
            return
        await self.check(topic)
        letter = DeadLetter(record, route, blocked_by, skip_reason=reason)
        try:
            producer = await asyncio.wait_for(self._producer(), self._timeout)
            await asyncio.wait_for(DeadLetterSink(producer, topic).send(letter), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise CannotPark(f"producing the record to topic {topic!r} failed: {exc!r}") from exc
        log.warning(
            "%s: record skipped by the operator: route %s: %s (it was blocked by: %s); produced "
            "to topic %s",
            record.coordinates,
            route,
            reason,
            blocked_by,
            topic,
        )
