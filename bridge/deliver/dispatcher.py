"""Delivery's front: records come in planned (:meth:`Dispatcher.submit`), outcomes go back out.

:class:`Dispatcher` implements :class:`bridge.deliver.ports.Delivery` over its parts, each the
one owner of its state:

- :class:`~bridge.deliver.lanes.Lanes`: per-key order, the live jobs per partition, the waits for
  the operator, the fences a reload puts between a route's old and new lanes;
- :class:`~bridge.deliver.limits.Limits`: send slots, rate limits, reply slots, pauses;
- :class:`~bridge.deliver.sender.Sender`: one ``/send`` and its retries;
- :class:`~bridge.deliver.endings.Endings`: finishing, dead-lettering and holding;
- :class:`~bridge.deliver.replies.ReplyWaiter`: reply routes after the accept;
- :class:`~bridge.deliver.batches.Batcher` and :class:`~bridge.deliver.batches.BatchRunner`.

A job holds its record's :class:`~bridge.deliver.lease.Lease`: when the Kafka side ends it (the
partition was revoked), the job stops where it is and its record stays unfinished. What happens
after a failure is decided by :mod:`bridge.deliver.decisions`; what became of each record is
reported through :class:`~bridge.deliver.ports.Outcomes`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..config import DeliveryConfig, RouteConfig
from ..core.batching import Batch
from ..core.offsets import TopicPartition
from ..core.routing import Invocation, Poison
from ..core.tracecontext import trace_headers
from ..ingress import Client
from ..operate.metrics import Metrics
from ..sinks.deadletter import DeadLetterSink
from ..sinks.replies import ReplySink
from .batches import Batcher, BatchRunner, batch_job
from .endings import Endings
from .health import IngressHealth
from .jobs import Job, Member
from .lanes import Lanes
from .lease import PendingRecord
from .limits import Limits
from .ports import Outcomes, Pauses
from .replies import ReplyWaiter
from .runner import JobRunner
from .sender import Sender

if TYPE_CHECKING:  # OpenTelemetry is an optional extra: imported only with spans on
    from ..tracing.spans import RecordSpan, RecordTracer

log = logging.getLogger(__name__)


def _nodes(client: Client | Sequence[Client]) -> tuple[Client, ...]:
    nodes = (client,) if isinstance(client, Client) else tuple(client)
    if not nodes:
        raise ValueError("at least one ingress client")
    return nodes


def lane_signature(route: RouteConfig) -> Hashable:
    """How a route forms its lanes (:meth:`bridge.core.routing.Route.invocation`): two routes
    with the same signature put a key's records in the same lane."""
    if route.ordering == "key":
        return ("key", route.target, route.service, route.key, route.scope)
    if route.ordering == "partition":
        return ("partition", route.name)
    return None


class Dispatcher:
    """Sends the invocations of submitted records (module docstring).

    ``client`` is the ingress client, or one client per ingress node (in the order of
    ``health``'s nodes): each send goes to the node ``health`` picks, among the up ones; so do
    the attach requests of reply routes (``attach_client``, likewise one or one per node).
    """

    def __init__(
        self,
        *,
        client: Client | Sequence[Client],
        metrics: Metrics,
        health: IngressHealth,
        delivery: DeliveryConfig,
        outcomes: Outcomes,
        pauses: Pauses,
        dead_letters: DeadLetterSink | None,
        request_timeout: float,
        replies: ReplySink | None = None,
        attach_client: Client | Sequence[Client] | None = None,
        tracer: RecordTracer | None = None,
    ) -> None:
        clients = _nodes(client)
        if len(clients) != len(health.labels):
            raise ValueError("one ingress client per node of the health")
        attach = clients if attach_client is None else _nodes(attach_client)
        self._metrics = metrics
        self._tracer = tracer
        self._lanes = lanes = Lanes(self._run)
        self._limits = limits = Limits(delivery, metrics, pauses, lanes)
        self._endings = endings = Endings(outcomes, metrics, dead_letters, lanes, limits.policy)
        sender = Sender(clients, health, limits, metrics, request_timeout)
        self._replies = ReplyWaiter(
            attach, health, replies, limits.reply_slots, metrics, endings, lanes, limits.policy
        )
        self._runner = JobRunner(sender, limits, endings, self._replies, lanes)
        self._batch_runner = BatchRunner(sender, limits, endings, metrics)
        self._batcher = Batcher(self._submit_batch)
        self._signatures: dict[str, Hashable] = {}
        """Each route's :func:`lane_signature`, as configured now."""
        self._relaned: frozenset[str] = frozenset()
        """Routes whose lanes the last reload made anew: their laned jobs wait for the fence
        of their partition (:meth:`Lanes.fence`)."""
        self._closed = False

    # -- Delivery --------------------------------------------------------------------------

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        """Send (or dead-letter) one planned invocation of ``pending``."""
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        if isinstance(item, Invocation):
            if item.batch is not None:
                self._batcher.add(pending, item)
                return
            if item.lane is not None:  # it must not overtake an open batch of its lane
                self._batcher.close_lane(item.lane)
        job = Job(item, (pending,))
        if self._tracer is not None:
            job.span = self._start_span(pending, item)
        self._add(job)

    def submit_skip(
        self, pending: PendingRecord, route: str, park: Callable[[], Awaitable[None]]
    ) -> None:
        """Finish ``pending``'s invocation of ``route`` without sending it, as the operator
        ordered (a skip of a record whose job was gone): ``park`` it (produce it to a topic, or
        log it), then count it as skipped. A ``park`` that fails holds the partition."""
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        self._lanes.add(Job(Poison(route, "skipped by the operator"), (pending,), park=park))

    def flush(self, routes: Collection[str] | None = None) -> None:
        """Send every open batch now, whatever its ``max_wait`` (before a drain); only the
        batches of ``routes`` when given (routes a reload removes or changes)."""
        self._batcher.flush(routes)

    def unsettled(self, tps: set[TopicPartition]) -> int:
        """Jobs of ``tps`` that may still end on their own (:meth:`Lanes.unsettled`)."""
        return self._lanes.unsettled(tps)

    def configure_routes(self, routes: Sequence[RouteConfig]) -> None:
        """Build every per-route setting (:meth:`Limits.configure`); on a reload, fence the
        partitions where jobs wait in lanes that no route forms any more (a route's
        ``ordering``, service, key or scope changed, or a partition-ordered route was renamed),
        so that a key's next record, in a lane of the new kind, does not overtake them."""
        self._limits.configure(routes)
        new = {r.name: lane_signature(r) for r in routes}
        if self._signatures:  # a reload
            kept, before = set(new.values()), set(self._signatures.values())
            # jobs whose lanes no route forms any more fence their partition, until they end
            self._lanes.fence(lambda job: job.signature not in kept)
            self._relaned = frozenset(name for name, sig in new.items() if sig not in before)
        self._signatures = new

    def pauses_changed(self) -> None:
        """The operator paused or resumed something: waiting jobs look again."""
        self._limits.pauses_changed()

    @property
    def missing_reply_topics(self) -> Mapping[str, int]:
        """Reply topics that do not exist, with how many replies wait for each (for /readyz)."""
        return self._replies.missing_topics

    @property
    def limits(self) -> Limits:
        """Slots, rate limits and policies per route (read them; :meth:`configure_routes`
        changes them)."""
        return self._limits

    @property
    def busy(self) -> int:
        """Jobs submitted and not yet ended (queued in a lane, sending, retrying or held)."""
        return self._lanes.busy

    async def aclose(self) -> None:
        """Cancel everything still under way (after the caller's drain timed out). No task is
        left behind. Safe to call twice."""
        self._closed = True
        await self._batcher.aclose()
        await self._lanes.aclose()

    # -- jobs ------------------------------------------------------------------------------

    def _add(self, job: Job) -> None:
        if job.lane is not None:
            route = job.route
            job.signature = self._signatures.get(route)
            if route in self._relaned:
                job.fence = self._lanes.fence_of(job.tp)
        self._lanes.add(job)

    def _submit_batch(self, batch: Batch[Member]) -> None:
        job = batch_job(batch)
        self._metrics.batch_size.labels(batch.route).observe(len(batch))
        self._add(job)

    async def _run(self, job: Job) -> None:
        handed_off = False
        try:
            if job.park is not None:
                await self._runner.run_skip(job, job.park)
            elif job.is_batch:
                await self._batch_runner.run(job)
            else:
                handed_off = await self._runner.run(job)
        finally:
            if not handed_off:
                self._lanes.ended(job)

    def _start_span(self, pending: PendingRecord, item: Invocation | Poison) -> RecordSpan:
        assert self._tracer is not None
        if isinstance(item, Invocation):
            headers: dict[str, str] = item.headers
        else:  # a poison has no request: its parent is the record's valid traceparent
            headers = dict(trace_headers(pending.record.headers).headers)
        return self._tracer.start(pending.record, item.route, headers)
