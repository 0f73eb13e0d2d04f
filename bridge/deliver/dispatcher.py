"""Sending invocations: per-key lanes in offset order, in-flight limits, retries, dead letters.

A lane is the ordering unit: every invocation with the same ``lane`` (an object key or workflow id
of one service, or one partition of a route) is sent only after the previous one ended. Invocations
without a lane go in parallel. What happens after a failure is decided by
:mod:`bridge.deliver.decisions`;
this module only does the I/O: take the slots, send, sleep, mark the ingress down, produce the
dead letter, or block the partition.

Reply routes: after the 202 the lane goes on at once (the next record of the key may be sent) and
a waiting task of its own attaches to the invocation by its id, produces the reply and only then
finishes the record. It holds a reply slot (``max_waiting_replies``) from before the send until the
reply is produced, never a send slot. Past the route's maximum wait the record is dead-lettered
(the invocation keeps running in Restate); a reply that cannot be produced yet (a missing topic, a
broker away) is retried without end, visibly, and its record stays unfinished.

Per-route settings (:meth:`Dispatcher.configure_routes`): a route's ``max_in_flight`` semaphore,
its ``rate_limit`` token bucket and its status lists. A job takes its route's tokens before any
slot (so a job held back by its rate holds nothing others need), then the route's slot, then a
global one; the route's status lists go into the decisions with its :class:`Policy`.

Nothing a record holds can end a lane: every exception while handling one job is caught there and
becomes a dead letter (or a blocked partition) with its reason. A blocked job waits until the
operator releases it (:meth:`Dispatcher.release`: run it again with fresh attempts, or finish it
as skipped), its partition is revoked (:meth:`Dispatcher.drop`) or the dispatcher closes; revoked,
it ends without finishing its record, and the jobs queued behind it for that partition are
skipped, never sent ahead.

Operator pauses (:meth:`Dispatcher.set_paused`): a job of a paused route or topic waits before it
takes any slot (reply, route, global), and before every retry; sends under way finish. A lane's
later jobs queue behind its waiting head, so per-key order holds across a pause and a resume.
Per-route settings (today the ``max_in_flight`` semaphores) are built by
:meth:`Dispatcher.configure_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..config import DeliveryConfig, RouteConfig
from ..core.batching import Accumulator, Batch, batch_body, batch_idempotency_key
from ..core.controls import Blocked, NotBlocked, ReleaseAction
from ..core.offsets import PartitionOffsets, TopicPartition
from ..core.ratelimit import TokenBucket, default_burst
from ..core.record import Record
from ..core.routing import Invocation, Poison
from ..core.tracecontext import trace_headers
from ..ingress import NO_INPUT, Client, SendReceipt
from ..operate.metrics import Metrics
from ..sinks.deadletter import DeadLetter, DeadLetterSink
from ..sinks.replies import Failed, Reply, ReplySink, ReplyTopicMissing, Succeeded
from .decisions import (
    Attempts,
    Block,
    DropValue,
    GiveUp,
    Policy,
    after_attach_failure,
    after_dead_letter_failure,
    after_reply_failure,
    after_send_failure,
)
from .health import IngressHealth

if TYPE_CHECKING:  # OpenTelemetry is an optional extra: imported only with spans on
    from ..tracing.spans import RecordSpan, RecordTracer

log = logging.getLogger(__name__)

_RELEASED = object()
"""What :meth:`Dispatcher._unless_released` returns when the partition was revoked first."""


@dataclass(slots=True)
class PendingRecord:
    """A fetched record and how many of its invocations are still under way."""

    record: Record
    tp: TopicPartition
    remaining: int
    owner: PartitionOffsets
    """The partition's offsets when the record was fetched (a later assignment has others)."""

    @property
    def coordinates(self) -> str:
        """``topic-partition@offset``."""
        return self.record.coordinates


@dataclass(frozen=True, slots=True)
class Held:
    """A job held at its blocked partition, waiting for the operator: the records it would
    finish (one, or a batch's), its route, and why it blocked."""

    records: tuple[Record, ...]
    route: str
    reason: str

    @property
    def offset(self) -> int:
        return self.records[0].offset


class _Retry(Exception):
    """Raised out of :meth:`Dispatcher._block` when the operator asks to run the job again."""


@dataclass(eq=False, slots=True)
class _Hold:
    held: Held
    decision: asyncio.Future[ReleaseAction]
    claimed: bool = False
    """A release has taken it (it may be producing the skipped record): no second one may."""


@dataclass(slots=True)
class _Ownership:
    """One assignment of a partition to this dispatcher; ``released`` when it ends."""

    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False, slots=True)
class _Job:
    pending: PendingRecord
    item: Invocation | Poison
    ownership: _Ownership
    gave_up: GiveUp | None = None
    """Why :meth:`Dispatcher._deliver` gave up, when it did."""
    span: RecordSpan | None = None
    """The record's span for this route, with ``[tracing] spans = true``."""

    @property
    def stale(self) -> bool:
        """Its partition was revoked (or the dispatcher closed) since it was submitted."""
        return self.ownership.released.is_set()


_Ticket = tuple[PendingRecord, Invocation, _Ownership]
"""One record of a batch: its record, its invocation (the body is its item), its assignment."""


@dataclass(eq=False, slots=True)
class _BatchJob(_Job):
    """A closed batch; ``pending`` is its first record, ``item`` the batch's invocation."""

    batch: Batch[_Ticket] = field(kw_only=True)


def _nodes(client: Client | Sequence[Client]) -> tuple[Client, ...]:
    nodes = (client,) if isinstance(client, Client) else tuple(client)
    if not nodes:
        raise ValueError("at least one ingress client")
    return nodes


def _splits(gave_up: GiveUp | None) -> bool:
    """A batch refused for good with a 4xx answer (not an unknown target) is retried record by
    record: the ingress may refuse the batch for one record (or for its size)."""
    if gave_up is None:
        return False
    return gave_up.label.startswith("http_4") and gave_up.label != "http_404"


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
        dead_letters: DeadLetterSink | None,
        on_finished: Callable[[PendingRecord], None],
        on_blocked: Callable[[Blocked], None],
        on_dead_letter: Callable[[DeadLetter], None],
        request_timeout: float,
        replies: ReplySink | None = None,
        attach_client: Client | Sequence[Client] | None = None,
        tracer: RecordTracer | None = None,
    ) -> None:
        self._clients = _nodes(client)
        if len(self._clients) != len(health.labels):
            raise ValueError("one ingress client per node of the health")
        self._tracer = tracer
        self._replies = replies
        self._attach_clients = self._clients if attach_client is None else _nodes(attach_client)
        self._reply_slots = asyncio.Semaphore(delivery.max_waiting_replies)
        self.missing_reply_topics: dict[str, int] = {}
        """Reply topics that do not exist, with how many replies wait for each (for /readyz)."""
        self._metrics = metrics
        self._health = health
        self._dead_letters = dead_letters
        self._on_finished = on_finished
        self._on_blocked = on_blocked
        self._on_dead_letter = on_dead_letter
        self._timeout = request_timeout
        self._policy = Policy.from_config(delivery)
        self._global = asyncio.Semaphore(delivery.max_in_flight)
        # per-route state, built by configure_routes
        self._route_limits: dict[str, tuple[int, asyncio.Semaphore]] = {}
        """Per route name: its ``max_in_flight`` and the semaphore that holds it."""
        self._buckets: dict[str, TokenBucket] = {}
        self._policies: dict[str, Policy] = {}
        self._paused_routes: frozenset[str] = frozenset()
        self._paused_topics: frozenset[str] = frozenset()
        self._pauses_changed = asyncio.Event()
        """Set (and replaced) whenever the pauses change: waiting jobs look again."""
        self._holds: dict[TopicPartition, list[_Hold]] = {}
        """Jobs blocked per partition, until released, revoked or closed."""
        self._waiting: dict[int, _Job] = {}
        """Jobs (by id) waiting for the operator: at a pause, or blocked."""
        self._lanes: dict[tuple[Any, ...], deque[_Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._owned: dict[TopicPartition, _Ownership] = {}
        self._jobs = 0
        self._jobs_of: Counter[TopicPartition] = Counter()
        self._closed = False
        self._batches: Accumulator[_Ticket] = Accumulator()
        self._batch_timer: asyncio.Task[None] | None = None
        self._batch_timer_at = 0.0
        self._batch_wake = asyncio.Event()

    # -- per-route settings and the operator's pauses ---------------------------------------

    def configure_routes(self, routes: Sequence[RouteConfig]) -> None:
        """Build every per-route setting from ``routes``: the ``max_in_flight`` semaphores, the
        ``rate_limit`` token buckets and the status policies (``retry_on``, ...).

        Called once at start and again on each reload. A route whose ``max_in_flight`` or rate
        limit did not change keeps its semaphore or its bucket (sends under way and tokens spent
        carry over); a changed one starts afresh, full, and sends already holding a slot of the
        old semaphore release it there, so for a moment both limits' worth may be in flight. A
        route that is gone keeps its settings: invocations planned before the reload are sent as
        planned. The operator's pauses are kept apart (:meth:`set_paused`): a reload does not
        resume a paused route.
        """
        now = time.monotonic()
        limits = dict(self._route_limits)
        buckets = dict(self._buckets)
        policies = dict(self._policies)
        for route in routes:
            name = route.name
            kept = limits.pop(name, None)
            if route.max_in_flight:
                if kept is None or kept[0] != route.max_in_flight:
                    kept = (route.max_in_flight, asyncio.Semaphore(route.max_in_flight))
                limits[name] = kept
            bucket = buckets.pop(name, None)
            if route.rate_limit:
                capacity = float(route.rate_limit_burst or default_burst(route.rate_limit))
                if bucket is None or (bucket.rate, bucket.capacity) != (route.rate_limit, capacity):
                    bucket = TokenBucket.full(route.rate_limit, capacity, now)
                buckets[name] = bucket
            policies.pop(name, None)
            if route.statuses:
                policies[name] = dataclasses.replace(self._policy, statuses=route.statuses)
        self._route_limits, self._buckets, self._policies = limits, buckets, policies
        self._metrics.prepare_rate_limits((r.name, r.rate_limit) for r in routes)

    def set_paused(self, routes: Iterable[str], topics: Iterable[str]) -> None:
        """Hold the jobs of these routes and of records of these topics before they take any
        slot (and before each retry); jobs of the others that waited go on, in lane order."""
        self._paused_routes = frozenset(routes)
        self._paused_topics = frozenset(topics)
        changed, self._pauses_changed = self._pauses_changed, asyncio.Event()
        changed.set()

    def _paused(self, route: str, topic: str) -> bool:
        return route in self._paused_routes or topic in self._paused_topics

    async def _unpaused(self, job: _Job, route: str) -> bool:
        """Wait while ``route`` or the job's topic is paused; False when its partition was
        revoked meanwhile (or the dispatcher closed)."""
        topic = job.pending.record.topic
        if not self._paused(route, topic):
            return not job.stale
        self._waiting[id(job)] = job
        try:
            while self._paused(route, topic) and not job.stale:
                changed = asyncio.ensure_future(self._pauses_changed.wait())
                released = asyncio.ensure_future(job.ownership.released.wait())
                try:
                    await asyncio.wait({changed, released}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                    released.cancel()
        finally:
            del self._waiting[id(job)]
        return not job.stale

    def unsettled(self, tps: set[TopicPartition]) -> int:
        """Jobs of ``tps`` that may still end on their own: not waiting for the operator (at a
        pause, or blocked), nor queued in a lane behind one that is. A drain waits for these."""
        waiting: Counter[TopicPartition] = Counter()
        lanes = set()
        for job in self._waiting.values():
            waiting[job.pending.tp] += 1
            if isinstance(job.item, Invocation) and job.item.lane is not None:
                lanes.add(job.item.lane)
        for lane in lanes:  # each lane's queue once (a reply task may share its head's lane)
            for queued in self._lanes.get(lane, ()):
                waiting[queued.pending.tp] += 1
        return sum(max(0, self._jobs_of[tp] - waiting[tp]) for tp in tps)

    # -- releasing blocked partitions ------------------------------------------------------

    def held(self, tp: TopicPartition) -> list[Held]:
        """The jobs blocked at ``tp`` that no release has taken yet, lowest offset first."""
        return sorted(
            (h.held for h in self._holds.get(tp, ()) if not h.claimed), key=lambda h: h.offset
        )

    async def release(
        self,
        tp: TopicPartition,
        action: ReleaseAction,
        prepare: Callable[[Sequence[Held]], Awaitable[None]] | None = None,
    ) -> list[Held]:
        """Release the jobs blocked at ``tp``'s lowest blocked offset: ``retry`` runs them again
        with fresh attempts (blocking again, visibly, if they fail for good again), ``skip``
        finishes their records as skipped. ``prepare`` runs first (it produces or logs the
        skipped records); if it raises, nothing is released. Raises :class:`NotBlocked` when no
        job is held there or another release has it."""
        holds = [h for h in self._holds.get(tp, ()) if not h.claimed]
        if not holds:
            name = f"{tp.topic}-{tp.partition}"
            if tp in self._holds:
                raise NotBlocked(f"partition {name} is being released already")
            raise NotBlocked(f"partition {name} is not blocked")
        lowest = min(h.held.offset for h in holds)
        chosen = [h for h in holds if h.held.offset == lowest]
        for hold in chosen:
            hold.claimed = True
        try:
            if prepare is not None:
                await prepare([h.held for h in chosen])
        except BaseException:
            for hold in chosen:
                hold.claimed = False
            raise
        for hold in chosen:
            if not hold.decision.done():
                hold.decision.set_result(action)
        return [h.held for h in chosen]

    # -- intake ----------------------------------------------------------------------------

    def _job_started(self, job: _Job) -> None:
        self._jobs += 1
        self._jobs_of[job.pending.tp] += 1

    def _job_ended(self, job: _Job) -> None:
        self._jobs -= 1
        tp = job.pending.tp
        left = self._jobs_of[tp] - 1
        if left > 0:
            self._jobs_of[tp] = left
        else:
            self._jobs_of.pop(tp, None)

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        ownership = self._ownership(pending.tp)
        if isinstance(item, Invocation) and item.batch is not None:
            self._add_to_batch(pending, item, ownership)
            return
        job = _Job(pending, item, ownership)
        if self._tracer is not None:
            job.span = self._start_span(pending.record, item)
        self._job_started(job)
        lane = item.lane if isinstance(item, Invocation) else None
        if lane is None:
            self._spawn(self._run(job))
            return
        queue = self._lanes.get(lane)
        if queue is None:
            self._lanes[lane] = deque([job])
            self._spawn(self._run_lane(lane))
        else:
            queue.append(job)

    def _start_span(self, record: Record, item: Invocation | Poison) -> RecordSpan:
        assert self._tracer is not None
        if isinstance(item, Invocation):
            headers: dict[str, str] = item.headers
        else:  # a poison has no request: its parent is the record's valid traceparent
            headers = dict(trace_headers(record.headers).headers)
        return self._tracer.start(record, item.route, headers)

    def submit_skip(
        self, pending: PendingRecord, route: str, park: Callable[[], Awaitable[None]]
    ) -> None:
        """Finish ``pending``'s invocation of ``route`` without sending it, as the operator
        ordered (a skip of a record whose job was gone): ``park`` it (produce it to a topic, or
        log it), then count it as skipped. A ``park`` that fails blocks the partition."""
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        job = _Job(pending, Poison(route, "skipped by the operator"), self._ownership(pending.tp))
        self._job_started(job)
        self._spawn(self._run_skip(job, route, park))

    def _ownership(self, tp: TopicPartition) -> _Ownership:
        ownership = self._owned.get(tp)
        if ownership is None:
            ownership = self._owned[tp] = _Ownership()
        return ownership

    def drop(self, tps: set[TopicPartition]) -> None:
        """Stop work for revoked partitions: jobs submitted so far are skipped or abandoned
        (retries stop, a blocked job ends), their results ignored. Records submitted later belong
        to a new assignment."""
        for tp in tps:
            if (ownership := self._owned.pop(tp, None)) is not None:
                ownership.released.set()
        self._batches.take(lambda b: b.tickets[0][2].released.is_set())  # never to be sent

    @property
    def busy(self) -> int:
        """Jobs submitted and not yet ended (queued in a lane, sending, retrying or blocked)."""
        return self._jobs

    async def aclose(self) -> None:
        """Release blocked jobs and cancel everything still under way (after the caller's drain
        timed out). No task is left behind. Safe to call twice."""
        self._closed = True
        self.drop(set(self._owned))
        while self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._jobs = 0  # a task cancelled before its first step never ran its job's ``finally``
        self._jobs_of.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # _run catches everything a record can cause: this is a bug in the dispatcher itself
            log.error("dispatch task failed", exc_info=exc)

    async def _run_lane(self, lane: tuple[Any, ...]) -> None:
        queue = self._lanes[lane]
        try:
            while queue:
                job = queue.popleft()
                await (self._run_batch(job) if isinstance(job, _BatchJob) else self._run(job))
        finally:
            del self._lanes[lane]

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        """Take one job to its end: accepted, dead-lettered, blocked (until released, revoked or
        closed), or abandoned because its partition was revoked; or, for a reply route, accepted
        and handed to a waiting task. Raises nothing but cancellation."""
        handed_off = False
        try:
            while True:
                try:
                    handed_off = await self._run_once(job)
                    return
                except _Retry:
                    self._retrying(job)
        finally:
            if not handed_off:
                self._job_ended(job)
            if job.span is not None:  # revoked or cancelled before it finished
                job.span.abandoned()

    def _retrying(self, job: _Job) -> None:
        job.gave_up = None
        log.info(
            "%s: route %s: released by the operator; retrying",
            job.pending.coordinates,
            job.item.route,
        )

    async def _run_once(self, job: _Job) -> bool:
        """One go at a job; True when a waiting task took it over (a reply route). Raises
        :class:`_Retry` when the operator releases it blocked, to run it again."""
        item = job.item
        slot = False
        try:
            if job.stale:
                return False
            if (self._paused_routes or self._paused_topics) and not await self._unpaused(
                job, item.route
            ):
                return False
            if isinstance(item, Invocation):
                # before any slot: a job waiting for its route's rate holds none others need
                await self._throttle(job, item.route, 1)
                if job.stale:
                    return False
            if isinstance(item, Invocation) and item.reply is not None:
                await self._reply_slots.acquire()
                slot = True
            if isinstance(item, Poison):
                reason: str | None = item.reason
            else:
                accepted = await self._deliver(job, item)
                reason = accepted if isinstance(accepted, str) else None
                if isinstance(accepted, SendReceipt):
                    outcome = "duplicate" if accepted.duplicate else "accepted"
                    if job.span is not None:
                        job.span.accepted(accepted.duplicate)
                    if item.reply is None:
                        self._finish(job, item.route, outcome)
                    else:  # the waiting task owns the job (and its reply slot) from here
                        self._spawn(self._await_reply(job, item, accepted))
                        slot = False
                        return True
            if reason is not None:
                if job.gave_up is not None and job.gave_up.block:
                    await self._block(job, item.route, reason, by_policy=True)
                else:
                    await self._reject(job, item.route, reason)
        except _Retry:
            raise
        except Exception as exc:  # a bug: it must not take the lane (and the partition) with it
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("%s: %s", job.pending.coordinates, reason)
            await self._block(job, job.item.route, reason)
        finally:
            if slot:
                self._reply_slots.release()
        return False

    async def _run_skip(self, job: _Job, route: str, park: Callable[[], Awaitable[None]]) -> None:
        """Park a record the operator skipped, then finish it; a failure blocks, visibly."""
        try:
            while not job.stale:
                try:
                    try:
                        await park()
                    except Exception as exc:  # whatever it is, the record must not be lost
                        reason = f"skip failed: {type(exc).__name__}: {exc}"
                        log.warning("%s: route %s: %s", job.pending.coordinates, route, reason)
                        await self._block(job, route, reason)
                    else:
                        self._finish(job, route, "skipped")
                    return
                except _Retry:
                    self._retrying(job)
        finally:
            self._job_ended(job)

    async def _deliver(self, job: _Job, inv: Invocation) -> SendReceipt | str | None:
        """Send until the ingress accepts (the receipt) or a decision gives up (the reason);
        ``None`` when the partition was revoked meanwhile."""
        metrics, route = self._metrics, inv.route
        policy = self._policies.get(route, self._policy)
        attempts = Attempts()
        while not job.stale:
            started = time.perf_counter()
            node, since, sent = await self._send(job, inv, attempts.count)
            if not isinstance(sent, Exception):
                if sent is None:  # revoked while waiting for a slot
                    return None
                metrics.latency_histogram(route).observe(time.perf_counter() - started)
                self._health.answered(node, since)
                return sent
            # every failure goes to the decision, whatever its type
            error = sent
            decision = after_send_failure(error, attempts, time.monotonic(), policy)
            metrics.ingress_errors.labels(route, decision.label).inc()
            if isinstance(decision, GiveUp):
                job.gave_up = decision
                if decision.unexpected:
                    log.error(
                        "%s: route %s: %s",
                        job.pending.coordinates,
                        route,
                        decision.reason,
                        exc_info=error,
                    )
                return decision.reason
            if decision.ingress_down:  # this node: the retry goes to another one that is up
                self._health.mark_down(f"{decision.label}: {error}", node)
            if decision.grace_started:
                log.warning(
                    "%s: route %s: %s; retrying for %.0fs (unknown_target_grace)",
                    job.pending.coordinates,
                    route,
                    error,
                    self._policy.unknown_target_grace,
                )
            metrics.retries.labels(route).inc()
            attempts = decision.attempts
            await self._pause(job, decision.delay)
        return None

    async def _send(
        self, job: _Job, inv: Invocation, attempt: int = 0
    ) -> tuple[int, int, SendReceipt | Exception | None]:
        """One ``/send`` within the route's limit, then the global one (in that order: a slow
        route at its cap waits for its own slots without holding global slots others need), to
        the node the health picks once the slots are taken. The node, what
        :meth:`IngressHealth.started` said, and the receipt, or what the send raised (any
        exception: the caller's decision judges it), or ``None`` when revoked meanwhile.
        ``attempt`` counts the failed sends before this one (for its span)."""
        # the fast path stays one check while nothing is paused
        if (self._paused_routes or self._paused_topics) and not await self._unpaused(
            job, inv.route
        ):
            return 0, 0, None
        limited = self._route_limits.get(inv.route)
        async with limited[1] if limited else contextlib.nullcontext(), self._global:
            if job.stale:
                return 0, 0, None
            node = self._health.pick()
            since = self._health.started(node)
            gauge = self._metrics.in_flight_gauge(inv.route)
            gauge.inc()
            send_span = None
            try:
                target = inv.target(self._clients[node])
                headers = inv.headers
                if job.span is not None:
                    send_span = job.span.send(target.send_url(delay=inv.delay), attempt)
                    headers = send_span.headers(headers)  # Restate's spans hang under this one
                receipt = await target.send(
                    NO_INPUT if inv.body is None else inv.body,
                    content_type=inv.content_type,
                    delay=inv.delay,
                    idempotency_key=inv.idempotency_key,
                    headers=headers,
                    timeout=self._timeout,
                    limit_key=inv.limit_key,
                )
            except Exception as exc:
                if send_span is not None:
                    send_span.failed(exc)
                return node, since, exc
            except BaseException as exc:  # cancelled: the span ends, the job's owner decides
                if send_span is not None:
                    send_span.failed(exc)
                raise
            finally:
                gauge.dec()
                self._health.finished(node)
            if send_span is not None:
                send_span.answered(202)
            return node, since, receipt

    async def _pause(self, job: _Job, seconds: float) -> None:
        """Sleep ``seconds``, or less if the job's partition is revoked meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.ownership.released.wait(), seconds)

    async def _throttle(self, job: _Job, route: str, records: int) -> None:
        """Wait until the route's rate limit lets ``records`` records go (a batch takes one token
        per record, once: retries take none), or until the partition is revoked."""
        bucket = self._buckets.get(route)
        if bucket is None:
            return
        started = time.monotonic()
        wait = bucket.reserve(records, started)
        if wait <= 0:
            return
        self._metrics.rate_limited.labels(route).inc(records)
        try:
            await self._pause(job, wait)
        finally:
            now = time.monotonic()
            self._metrics.rate_limit_wait.labels(route).inc(now - started)
            if job.stale:  # revoked (or closing) while waiting: the tokens were never used
                bucket.refund(records, now)

    # -- replies ---------------------------------------------------------------------------

    async def _await_reply(self, job: _Job, inv: Invocation, receipt: SendReceipt) -> None:
        """Attach to the accepted invocation, produce its reply, then finish the record; past
        the maximum wait, or for a reply that can never be produced, dead-letter it (or block).
        Holds the job's reply slot until then; raises nothing but cancellation."""
        route = inv.route
        gauge = self._metrics.waiting_replies
        gauge.inc()
        slot = True
        try:
            while True:
                try:
                    if not slot:  # released blocked by the operator: wait for the result again
                        await self._reply_slots.acquire()
                        gauge.inc()
                        slot = True
                    result = await self._attach(job, inv, receipt.invocation_id)
                    reason: str | None = None
                    if isinstance(result, str):
                        reason = result
                    elif result is not None:
                        assert inv.reply is not None
                        reply = Reply(
                            job.pending.record,
                            inv.reply.topic,
                            receipt.invocation_id,
                            result,
                            inv.reply.correlation_header,
                        )
                        produced = await self._produce_reply(job, route, reply)
                        if produced is True:
                            status = "ok" if isinstance(result, Succeeded) else "error"
                            self._metrics.replies.labels(route, status).inc()
                            outcome = "duplicate" if receipt.duplicate else "accepted"
                            self._finish(job, route, outcome)
                        elif produced is not None:
                            reason = produced
                    if reason is not None:
                        gauge.dec()
                        self._reply_slots.release()  # a dead letter (or a block) needs no slot
                        slot = False
                        await self._reject(job, route, reason)
                    return
                except _Retry:
                    self._retrying(job)
                except Exception as exc:  # a bug: the record must not finish unanswered
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                    log.exception("%s: %s", job.pending.coordinates, reason)
                    if slot:
                        gauge.dec()
                        self._reply_slots.release()
                        slot = False
                    try:
                        await self._block(job, route, reason)
                        return
                    except _Retry:
                        self._retrying(job)
        finally:
            if slot:
                gauge.dec()
                self._reply_slots.release()
            self._job_ended(job)

    async def _attach(
        self, job: _Job, inv: Invocation, invocation_id: str
    ) -> Succeeded | Failed | str | None:
        """Wait for the invocation's result (or its terminal error) until the route's maximum
        wait; the dead-letter reason when it does not come; ``None`` when revoked meanwhile."""
        assert inv.reply is not None
        route, max_wait = inv.route, inv.reply.max_wait
        started = time.monotonic()
        deadline = started + max_wait
        attempt = 0
        while not job.stale:
            # any node that is up: the invocation lives in the cluster, not in one node
            handle = self._attach_clients[self._health.pick()].invocation(invocation_id)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError(f"no result within {max_wait}s")
                output = await self._unless_released(
                    job, handle.attach(output=bytes, timeout=remaining)
                )
            except Exception as exc:  # every failure goes to the decision, whatever its type
                error = exc
                decision = after_attach_failure(
                    error,
                    attempt,
                    time.monotonic(),
                    deadline,
                    max_wait,
                    invocation_id,
                    self._policy,
                )
            else:
                if output is _RELEASED:
                    return None
                self._metrics.reply_wait.labels(route).observe(time.monotonic() - started)
                return Succeeded(output)
            if isinstance(decision, Failed):
                self._metrics.reply_wait.labels(route).observe(time.monotonic() - started)
                return decision
            self._metrics.reply_errors.labels(route, decision.label).inc()
            coords = job.pending.coordinates
            if isinstance(decision, GiveUp):
                if decision.unexpected:
                    log.error("%s: route %s: %s", coords, route, decision.reason, exc_info=error)
                return decision.reason
            log.warning(
                "%s: route %s: attaching to %s failed (%s); retrying",
                coords,
                route,
                invocation_id,
                error,
            )
            attempt += 1
            await self._pause(job, decision.delay)
        return None

    async def _produce_reply(
        self, job: _Job, route: str, reply: Reply
    ) -> Literal[True] | str | None:
        """Produce the reply until it is written (``True``) or refused for good (the reason);
        ``None`` when revoked meanwhile. A missing topic is retried and reported."""
        if self._replies is None:
            raise RuntimeError("a reply route without a reply producer")
        attempt = 0
        missing = False
        try:
            while not job.stale:
                try:
                    await self._replies.send(reply)
                except Exception as exc:  # every failure goes to the decision, whatever its type
                    error = exc
                    decision = after_reply_failure(error, attempt, self._policy)
                else:
                    return True
                self._metrics.reply_errors.labels(route, decision.label).inc()
                coords = job.pending.coordinates
                if isinstance(decision, GiveUp):
                    if decision.unexpected:
                        log.error(
                            "%s: route %s: %s", coords, route, decision.reason, exc_info=error
                        )
                    return decision.reason
                if isinstance(error, ReplyTopicMissing) and not missing:
                    missing = True
                    topics = self.missing_reply_topics
                    topics[reply.topic] = topics.get(reply.topic, 0) + 1
                if attempt & (attempt - 1) == 0:  # attempts 0, 1, 2, 4, 8, ...: say it, not flood
                    log.warning(
                        "%s: route %s: reply to topic %s not produced (%s); retrying, the record "
                        "stays uncommitted (attempt %d)",
                        coords,
                        route,
                        reply.topic,
                        error,
                        attempt + 1,
                    )
                attempt += 1
                await self._pause(job, decision.delay)
            return None
        finally:
            if missing:
                left = self.missing_reply_topics[reply.topic] - 1
                if left:
                    self.missing_reply_topics[reply.topic] = left
                else:
                    del self.missing_reply_topics[reply.topic]

    async def _unless_released(self, job: _Job, work: Coroutine[Any, Any, Any]) -> Any:
        """``await work``, or :data:`_RELEASED` as soon as the job's partition is revoked."""
        task = asyncio.ensure_future(work)
        released = asyncio.ensure_future(job.ownership.released.wait())
        try:
            await asyncio.wait({task, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return _RELEASED
        return task.result()

    # -- records that can never succeed ----------------------------------------------------

    async def _reject(self, job: _Job, route: str, reason: str) -> None:
        """Dead-letter the record, or block its partition when there is no dead-letter topic or
        the dead letter cannot be written."""
        if self._dead_letters is None:
            await self._block(job, route, reason)
            return
        letter = DeadLetter(job.pending.record, route, reason)
        attempt = 0
        drop_value: str | None = None
        while not job.stale:
            try:
                await self._dead_letters.send(letter, drop_value=drop_value)
            except Exception as exc:  # every failure goes to the decision, whatever its type
                error = exc
                self._metrics.dead_letter_errors.inc()
                decision = after_dead_letter_failure(
                    error, attempt, drop_value is not None, self._policy
                )
            else:
                break
            coords = job.pending.coordinates
            if isinstance(decision, Block):
                await self._block(job, route, f"{decision.reason} (dead letter for: {reason})")
                return
            if isinstance(decision, DropValue):
                log.warning(
                    "%s: dead letter refused (%s); sending it without the value",
                    coords,
                    decision.why,
                )
                drop_value = decision.why
                continue
            log.warning("%s: dead-letter produce failed (%s); retrying", coords, error)
            attempt += 1
            await self._pause(job, decision.delay)
        else:
            return  # revoked: the next owner handles the record
        log.warning("dead-lettered %s (route %s): %s", letter.coordinates, route, reason)
        if job.span is not None:
            job.span.failed("dead_lettered", reason)
        self._on_dead_letter(letter)
        self._finish(job, route, "dead_lettered")

    async def _block(
        self,
        job: _Job,
        route: str,
        reason: str,
        *,
        by_policy: bool = False,
        records: tuple[Record, ...] | None = None,
        skipped: Callable[[], None] | None = None,
    ) -> bool:
        """Report the partition blocked and hold this job (and its lane) until the operator
        releases it, the partition is revoked or the dispatcher closes. Meanwhile the record
        stays unfinished, so nothing past it is committed (and the next owner reads it again).
        ``by_policy``: the route's ``block_on`` asked for it (a dead-letter topic would not help).

        Released with ``skip``: the job's record is finished as skipped (``skipped`` does it
        for a batch's ``records``) and True is returned; with ``retry``: raises
        :class:`_Retry` for the caller to run the job again. False when revoked or closed."""
        pending = job.pending
        tp = pending.tp
        log.error(
            "%s: partition %s-%d blocked at offset %d: route %s: %s (%s, then release it: POST "
            "/admin/partitions/%s/%d/release%s)",
            pending.coordinates,
            tp.topic,
            tp.partition,
            pending.record.offset,
            route,
            reason,
            "the route's block_on names this answer: fix its cause"
            if by_policy
            else "fix the cause",
            tp.topic,
            tp.partition,
            "" if by_policy else "; or configure a [dead_letter] topic",
        )
        if job.span is not None:
            job.span.failed("blocked", reason)
        try:
            self._on_blocked(Blocked(tp, pending.record.offset, route, reason))
        except Exception:  # the log line above still says it; the job must hold its lane
            log.exception("%s: on_blocked failed", pending.coordinates)
        loop = asyncio.get_running_loop()
        hold = _Hold(Held(records or (pending.record,), route, reason), loop.create_future())
        holds = self._holds.setdefault(tp, [])
        holds.append(hold)
        self._waiting[id(job)] = job
        released = asyncio.ensure_future(job.ownership.released.wait())
        try:
            waits: set[asyncio.Future[Any]] = {hold.decision, released}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            self._waiting.pop(id(job), None)
            holds.remove(hold)
            if not holds and self._holds.get(tp) is holds:
                del self._holds[tp]
        if job.stale or not hold.decision.done():
            hold.decision.cancel()
            return False
        if hold.decision.result() == "retry":
            raise _Retry
        if skipped is not None:
            skipped()
        else:
            self._finish(job, route, "skipped")
        return True

    def _finish(self, job: _Job, route: str, outcome: str) -> None:
        pending = job.pending
        self._metrics.message_counter(pending.record.topic, route, outcome).inc()
        pending.remaining -= 1
        if pending.remaining == 0:
            self._on_finished(pending)

    # -- batch routes ----------------------------------------------------------------------

    def flush(self, routes: Collection[str] | None = None) -> None:
        """Send every open batch now, whatever its ``max_wait`` (before a drain); only the
        batches of ``routes`` when given (routes a reload removes or changes)."""
        where = None if routes is None else (lambda batch: batch.route in routes)
        for batch in self._batches.take(where):
            self._submit_batch(batch)

    def _add_to_batch(self, pending: PendingRecord, inv: Invocation, owner: _Ownership) -> None:
        """Gather a batch route's record into its group's batch: one per route and partition,
        and per key for an object (so an object's batch holds one key, in offset order)."""
        config = inv.batch
        assert config is not None
        assert inv.body is not None
        rec = pending.record
        key = inv.key if inv.kind == "object" else None
        # a batch is one invocation: one scope and one limit key for all its records
        group = (inv.route, rec.topic, rec.partition, key, inv.scope, inv.limit_key)
        opens = group not in self._batches
        now = time.monotonic()
        for batch in self._batches.add(
            group,
            inv.route,
            config,
            rec.topic,
            rec.partition,
            rec.offset,
            len(inv.body),
            (pending, inv, owner),
            now,
        ):
            self._submit_batch(batch)
        if opens and group in self._batches:
            self._arm_batch_timer(now + config.max_wait.total_seconds())

    def _arm_batch_timer(self, deadline: float) -> None:
        if self._batch_timer is None:
            task = asyncio.get_running_loop().create_task(self._close_due_batches())
            self._batch_timer = task
            self._tasks.add(task)
            task.add_done_callback(self._done)
        elif deadline < self._batch_timer_at:
            self._batch_wake.set()

    async def _close_due_batches(self) -> None:
        """Send each batch when its ``max_wait`` has passed; ends when none is open."""
        try:
            while (deadline := self._batches.next_deadline()) is not None:
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._batch_timer_at = deadline
                    self._batch_wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._batch_wake.wait(), delay)
                    continue
                for batch in self._batches.due(time.monotonic()):
                    self._submit_batch(batch)
        finally:
            self._batch_timer = None

    def _submit_batch(self, batch: Batch[_Ticket]) -> None:
        pending, first, owner = batch.tickets[0]
        body = batch_body([inv.body for _, inv, _ in batch.tickets if inv.body is not None])
        idem = batch.idempotency_key() if first.batch and first.batch.idempotent else None
        inv = dataclasses.replace(first, body=body, idempotency_key=idem)
        job = _BatchJob(pending, inv, owner, batch=batch)
        self._metrics.batch_size.labels(batch.route).observe(len(batch))
        self._job_started(job)
        if inv.lane is None:
            self._spawn(self._run_batch(job))
            return
        queue = self._lanes.get(inv.lane)
        if queue is None:
            self._lanes[inv.lane] = deque([job])
            self._spawn(self._run_lane(inv.lane))
        else:
            queue.append(job)

    async def _run_batch(self, job: _Job) -> None:
        """Take one batch to its end: accepted (every record finishes), refused with a 4xx
        (retried record by record), dead-lettered record by record, blocked (until released,
        revoked or closed), or abandoned because its partition was revoked. Raises nothing but
        cancellation."""
        assert isinstance(job, _BatchJob)
        try:
            while True:
                try:
                    await self._batch_once(job)
                    return
                except _Retry:
                    self._retrying(job)
        finally:
            self._job_ended(job)

    async def _batch_once(self, job: _BatchJob) -> None:
        inv = job.item
        assert isinstance(inv, Invocation)
        tickets = job.batch.tickets
        try:
            if job.stale:
                return
            if (self._paused_routes or self._paused_topics) and not await self._unpaused(
                job, inv.route
            ):
                return
            await self._throttle(job, inv.route, len(tickets))
            if job.stale:
                return
            accepted = await self._deliver(job, inv)
            if isinstance(accepted, SendReceipt):
                self._batch_accepted(inv.route, tickets, accepted)
            elif accepted is not None:
                if job.gave_up is not None and job.gave_up.block:
                    await self._block(job, inv.route, accepted, by_policy=True)
                elif len(tickets) > 1 and _splits(job.gave_up):
                    log.warning(
                        "%s: route %s: a batch of %d records was refused (%s); retrying it "
                        "record by record",
                        job.pending.coordinates,
                        inv.route,
                        len(tickets),
                        accepted,
                    )
                    await self._run_singles(tickets)
                else:
                    self._metrics.invocations.labels(inv.route, "dead_lettered").inc()
                    for n, (pending, single, owner) in enumerate(tickets):
                        one = _Job(pending, single, owner)
                        if one.stale:
                            return
                        try:
                            await self._reject(one, inv.route, accepted)
                        except _Retry:  # released: it and the rest go again, one by one
                            self._retrying(one)
                            await self._run_singles(tickets[n:])
                            return
        except _Retry:
            raise
        except Exception as exc:  # a bug: it must not take the lane (and the partition) with it
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("%s: %s", job.pending.coordinates, reason)

            def skipped() -> None:
                for pending, _, _ in tickets:
                    self._metrics.message_counter(pending.record.topic, inv.route, "skipped").inc()
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._on_finished(pending)

            records = tuple(pending.record for pending, _, _ in tickets)
            await self._block(job, inv.route, reason, records=records, skipped=skipped)

    async def _run_singles(self, tickets: list[_Ticket]) -> None:
        """Send a refused batch's records one by one (each a batch of one, in offset order):
        only the records the ingress refuses are dead-lettered (or block, until released)."""
        for pending, item, owner in tickets:
            assert item.body is not None
            rec = pending.record
            idem = None
            if item.batch is not None and item.batch.idempotent:
                idem = batch_idempotency_key(
                    item.route, rec.topic, rec.partition, rec.offset, rec.offset
                )
            inv = dataclasses.replace(item, body=batch_body([item.body]), idempotency_key=idem)
            one = _Job(pending, inv, owner)
            while True:
                try:
                    accepted = await self._deliver(one, inv)
                    if accepted is None:  # revoked
                        return
                    if isinstance(accepted, SendReceipt):
                        self._batch_accepted(inv.route, [(pending, inv, owner)], accepted)
                    elif one.gave_up is not None and one.gave_up.block:
                        await self._block(one, inv.route, accepted, by_policy=True)
                        if one.stale:
                            return
                    else:
                        self._metrics.invocations.labels(inv.route, "dead_lettered").inc()
                        await self._reject(one, inv.route, accepted)
                        if one.stale:  # blocked (no dead-letter topic) until revoked
                            return
                    break
                except _Retry:
                    self._retrying(one)

    def _batch_accepted(self, route: str, tickets: list[_Ticket], receipt: SendReceipt) -> None:
        outcome = "duplicate" if receipt.duplicate else "accepted"
        self._metrics.invocations.labels(route, outcome).inc()
        messages = self._metrics.messages
        for pending, _, _ in tickets:
            messages.labels(pending.record.topic, route, outcome).inc()
            pending.remaining -= 1
            if pending.remaining == 0:
                self._on_finished(pending)
