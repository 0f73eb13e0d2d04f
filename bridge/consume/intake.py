"""Taking fetched records: record -> decode -> plan -> pending record -> delivery.

Nothing a record holds stops the consume loop: routing never raises (a bug in it dead-letters
the record with its reason), and a record that cannot be handed to delivery blocks its
partition, visibly. A partition takes at most ``delivery.max_pending_per_partition`` records
that are not yet committable; the rest stay in Kafka (the consumer seeks back to them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from ..core.controls import Blocked, Controls, SkipOrder
from ..core.deployments import describe
from ..core.inputs import InputCheck, input_refused
from ..core.offsets import TopicPartition
from ..core.record import Record
from ..core.routing import Invocation, Poison, Skip
from ..deliver.lease import PendingRecord
from ..deliver.ports import Delivery
from ..operate.metrics import Metrics
from ..schemas.decoder import Decoder
from ..sinks.parking import Parking
from .book import PartitionBook
from .port import ConsumerPort
from .routes import RoutesInForce

log = logging.getLogger(__name__)


class Deployed(Protocol):
    """What Restate's registry says of each route's target."""

    def dedup_window(self, route: str) -> float | None:
        """Seconds Restate remembers its idempotency keys, or ``None`` when unknown."""

    def input_check(self, route: str) -> InputCheck | None:
        """Its handler's input schema, for a ``validate_input`` route; ``None``: nothing to
        check."""


def as_record(msg: Any) -> Record:
    """aiokafka's ``ConsumerRecord`` as the bridge's :class:`Record`."""
    headers = tuple(msg.headers or ())
    return Record(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value, headers)


class Intake:
    """Plans fetched records and submits their invocations."""

    def __init__(
        self,
        *,
        routes: RoutesInForce,
        book: PartitionBook,
        delivery: Delivery,
        controls: Controls,
        parking: Parking,
        metrics: Metrics,
        decoder: Decoder | None = None,
        windows: Deployed | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._routes = routes
        self._windows = windows
        self._wall_clock = wall_clock
        self._book = book
        self._delivery = delivery
        self._controls = controls
        self._parking = parking
        self._metrics = metrics
        self.decoder = decoder
        """Decodes framed keys and values before planning, when a route reads a framed format."""

    def take(self, consumer: ConsumerPort, tp: TopicPartition, msgs: Sequence[Any]) -> None:
        """Handle one partition's fetched records, up to ``max_pending_per_partition`` records
        not yet committable; seek back to the first one left over, so Kafka keeps it."""
        book = self._book
        if not book.owns(tp):  # being revoked: the next owner reads it from the commit
            return
        if not self._routes.router.routes_for(tp.topic):
            # a topic a reload removed, fetched before its revocation: leave it uncommitted
            return
        if book.is_blocked(tp) or tp in book.operator_paused:  # fetched before the pause
            room = 0
        else:
            bound = self._routes.config.delivery.max_pending_per_partition
            room = bound - book.tracker.uncommittable(tp)
        taken = 0
        for msg in msgs[: max(room, 0)]:
            if not self.handle(msg):  # its schema is not to be had now: it waits in Kafka
                break
            taken += 1
        if taken < len(msgs):
            with contextlib.suppress(KafkaError):  # IllegalStateError: revoked meanwhile
                consumer.seek(tp, msgs[taken].offset)

    def handle(self, msg: Any) -> bool:
        """Plan one record and submit its invocations; nothing a record holds stops the loop.
        False when it cannot be handled yet (a schema registry outage): it was not taken."""
        tp = TopicPartition(msg.topic, msg.partition)
        record = as_record(msg)
        if self.decoder is not None:
            decoded = self.decoder.decode(record)
            if decoded is None:
                return False
            record = decoded
        lease = self._book.lease(tp)
        if lease is None:
            return True  # revoked meanwhile
        offsets = self._book.track(tp, msg.offset)
        order = self._controls.take_skip(tp, msg.offset)
        sendable = self._plan(record)
        if not sendable:
            self._book.finished_offset(tp, msg.offset, offsets)
            return True
        pending = PendingRecord(record, lease, len(sendable), offsets)
        try:
            self._submit(pending, sendable, order)
        except Exception as exc:  # a bug: the record cannot finish, so block visibly
            log.exception("%s: internal error while submitting the record", record.coordinates)
            reason = f"internal error while submitting: {type(exc).__name__}: {exc}"
            self._book.block_without_job(Blocked(tp, msg.offset, "", reason))
        return True

    def _plan(self, record: Record) -> list[Invocation | Poison]:
        """The record's invocations (and poisons); skips and an unrouted record are counted."""
        items: Sequence[Invocation | Poison | Skip]
        try:
            items = self._routes.router.plan(record)
        except Exception as exc:  # plan never raises by contract: a bug must not stop the loop
            log.exception(
                "%s: internal error while routing; dead-lettering the record", record.coordinates
            )
            items = [Poison("", f"internal error while routing: {type(exc).__name__}: {exc}")]
        if not items:
            self._metrics.messages.labels(record.topic, "", "unrouted").inc()
            return []
        sendable: list[Invocation | Poison] = []
        checks = self._routes.max_ages or self._windows is not None
        for item in items:
            if isinstance(item, Skip):
                self._metrics.messages.labels(record.topic, item.route, "skipped").inc()
                continue
            if isinstance(item, Invocation):
                if item.trace_dropped:
                    self._trace_dropped(record, item)
                if checks:
                    sendable.append(self._checked(record, item))
                    continue
            sendable.append(item)
        return sendable

    def _checked(self, record: Record, item: Invocation) -> Invocation | Poison:
        """``item``, or a poison: too old for its route, or an input its handler's schema
        refuses (``validate_input``)."""
        aged = self._aged(record, item)
        windows = self._windows
        if aged is not item or windows is None:
            return aged
        check = windows.input_check(item.route)
        if check is None:
            return item
        problem = check.problem(item.body)
        if problem is None:
            return item
        self._metrics.inputs_refused.labels(item.route).inc()
        return Poison(item.route, input_refused(item.service, item.handler, problem))

    def _aged(self, record: Record, item: Invocation) -> Invocation | Poison:
        """``item``, or a poison when the record is older than its route's ``max_record_age``;
        a record older than Restate remembers its target's idempotency keys is counted."""
        age = record.age(self._wall_clock())
        if age is None:
            return item
        window = self._windows.dedup_window(item.route) if self._windows is not None else None
        if window is not None and age > window:
            self._metrics.past_dedup_window.labels(item.route).inc()
        limit = self._routes.max_ages.get(item.route)
        if limit is None or age <= limit[0]:
            return item
        reason = (
            f"older than max_record_age ({describe(timedelta(seconds=limit[0]))}): "
            f"written {_roughly(age)} ago"
        )
        return Poison(item.route, reason, held=item if limit[1] else None)

    def _submit(
        self, pending: PendingRecord, items: list[Invocation | Poison], order: SkipOrder | None
    ) -> None:
        record = pending.record
        for item in items:
            if order is not None and order.applies_to(item.route):
                park = functools.partial(
                    self._parking.park,
                    record,
                    item.route,
                    order.blocked_by,
                    order.reason,
                    order.topic,
                )
                self._delivery.submit_skip(pending, item.route, park)
            else:
                self._delivery.submit(pending, item)

    def _trace_dropped(self, record: Record, inv: Invocation) -> None:
        """Count and log trace headers left out: tracing is best effort, the record goes on."""
        self._metrics.trace_context_dropped.labels(inv.route).inc(len(inv.trace_dropped))
        for reason in inv.trace_dropped:
            log.debug(
                "%s: route %s: trace header not forwarded: %s",
                record.coordinates,
                inv.route,
                reason,
            )


def _roughly(seconds: float) -> str:
    """``3.0h``, ``2.5d``, ``90s``: an age in its largest unit, to a tenth."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
