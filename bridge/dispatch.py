"""Sending invocations: per-key lanes in offset order, in-flight limits, retries, dead letters.

A lane is the ordering unit: every invocation with the same ``lane`` (an object key or workflow id
of one service, or one partition of a route) is sent only after the previous one ended. Invocations
without a lane go in parallel. What happens after a failure is decided by :mod:`bridge.decisions`;
this module only does the I/O: take the slots, send, sleep, mark the ingress down, produce the
dead letter, or block the partition.

Nothing a record holds can end a lane: every exception while handling one job is caught there and
becomes a dead letter (or a blocked partition) with its reason. A blocked job waits until its
partition is revoked (:meth:`Dispatcher.drop`) or the dispatcher closes, and then ends without
finishing its record; the jobs queued behind it for that partition are skipped, never sent ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .config import DeliveryConfig
from .deadletter import DeadLetter, DeadLetterSink
from .decisions import (
    Attempts,
    Block,
    DropValue,
    GiveUp,
    Policy,
    after_dead_letter_failure,
    after_send_failure,
)
from .health import IngressHealth
from .ingress import NO_INPUT, Client, SendReceipt
from .metrics import Metrics
from .offsets import PartitionOffsets, TopicPartition
from .record import Record
from .routing import Invocation, Poison

log = logging.getLogger(__name__)


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
class Blocked:
    """A partition stopped at ``offset``: its record can be neither sent nor dead-lettered."""

    tp: TopicPartition
    offset: int
    route: str
    reason: str


@dataclass(slots=True)
class _Ownership:
    """One assignment of a partition to this dispatcher; ``released`` when it ends."""

    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Job:
    pending: PendingRecord
    item: Invocation | Poison
    ownership: _Ownership

    @property
    def stale(self) -> bool:
        """Its partition was revoked (or the dispatcher closed) since it was submitted."""
        return self.ownership.released.is_set()


class Dispatcher:
    def __init__(
        self,
        *,
        client: Client,
        metrics: Metrics,
        health: IngressHealth,
        delivery: DeliveryConfig,
        route_limits: dict[str, int | None],
        dead_letters: DeadLetterSink | None,
        on_finished: Callable[[PendingRecord], None],
        on_blocked: Callable[[Blocked], None],
        on_dead_letter: Callable[[DeadLetter], None],
        request_timeout: float,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._health = health
        self._dead_letters = dead_letters
        self._on_finished = on_finished
        self._on_blocked = on_blocked
        self._on_dead_letter = on_dead_letter
        self._timeout = request_timeout
        self._policy = Policy.from_config(delivery)
        self._global = asyncio.Semaphore(delivery.max_in_flight)
        self._route_limits = {
            name: asyncio.Semaphore(limit) for name, limit in route_limits.items() if limit
        }
        self._lanes: dict[tuple[Any, ...], deque[_Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._owned: dict[TopicPartition, _Ownership] = {}
        self._jobs = 0
        self._closed = False

    # -- intake ----------------------------------------------------------------------------

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        ownership = self._owned.get(pending.tp)
        if ownership is None:
            ownership = self._owned[pending.tp] = _Ownership()
        job = _Job(pending, item, ownership)
        self._jobs += 1
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

    def drop(self, tps: set[TopicPartition]) -> None:
        """Stop work for revoked partitions: jobs submitted so far are skipped or abandoned
        (retries stop, a blocked job ends), their results ignored. Records submitted later belong
        to a new assignment."""
        for tp in tps:
            if (ownership := self._owned.pop(tp, None)) is not None:
                ownership.released.set()

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
                await self._run(queue.popleft())
        finally:
            del self._lanes[lane]

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        """Take one job to its end: accepted, dead-lettered, blocked, or abandoned because its
        partition was revoked. Raises nothing but cancellation."""
        try:
            if job.stale:
                return
            item = job.item
            reason = item.reason if isinstance(item, Poison) else await self._deliver(job, item)
            if reason is not None:
                await self._reject(job, item.route, reason)
        except Exception as exc:  # a bug: it must not take the lane (and the partition) with it
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("%s: %s", job.pending.coordinates, reason)
            await self._block(job, job.item.route, reason)
        finally:
            self._jobs -= 1

    async def _deliver(self, job: _Job, inv: Invocation) -> str | None:
        """Send until the ingress accepts (``None``) or a decision gives up (the reason)."""
        metrics, route = self._metrics, inv.route
        attempts = Attempts()
        while not job.stale:
            started = time.perf_counter()
            try:
                receipt = await self._send(job, inv)
            except Exception as exc:  # every failure goes to the decision, whatever its type
                error = exc
                decision = after_send_failure(error, attempts, time.monotonic(), self._policy)
            else:
                if receipt is None:  # revoked while waiting for a slot
                    return None
                metrics.ingress_latency.labels(route).observe(time.perf_counter() - started)
                self._health.mark_up()
                self._finish(job, route, "duplicate" if receipt.duplicate else "accepted")
                return None
            metrics.ingress_errors.labels(route, decision.label).inc()
            if isinstance(decision, GiveUp):
                if decision.unexpected:
                    log.error(
                        "%s: route %s: %s",
                        job.pending.coordinates,
                        route,
                        decision.reason,
                        exc_info=error,
                    )
                return decision.reason
            if decision.ingress_down:
                self._health.mark_down(f"{decision.label}: {error}")
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

    async def _send(self, job: _Job, inv: Invocation) -> SendReceipt | None:
        """One ``/send`` within the route's limit, then the global one (in that order: a slow
        route at its cap waits for its own slots without holding global slots others need)."""
        route_limit = self._route_limits.get(inv.route)
        async with route_limit or contextlib.nullcontext(), self._global:
            if job.stale:
                return None
            gauge = self._metrics.in_flight.labels(inv.route)
            gauge.inc()
            try:
                return await inv.target(self._client).send(
                    NO_INPUT if inv.body is None else inv.body,
                    content_type=inv.content_type,
                    delay=inv.delay,
                    idempotency_key=inv.idempotency_key,
                    headers=inv.headers,
                    timeout=self._timeout,
                )
            finally:
                gauge.dec()

    async def _pause(self, job: _Job, seconds: float) -> None:
        """Sleep ``seconds``, or less if the job's partition is revoked meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.ownership.released.wait(), seconds)

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
        self._on_dead_letter(letter)
        self._finish(job, route, "dead_lettered")

    async def _block(self, job: _Job, route: str, reason: str) -> None:
        """Report the partition blocked and hold this job (and its lane) until the partition is
        revoked or the dispatcher closes; the record stays unfinished, so nothing past it is
        committed and the next owner reads it again."""
        pending = job.pending
        tp = pending.tp
        log.error(
            "%s: partition %s-%d blocked at offset %d: route %s: %s (fix the cause or configure "
            "a [dead_letter] topic, then restart)",
            pending.coordinates,
            tp.topic,
            tp.partition,
            pending.record.offset,
            route,
            reason,
        )
        try:
            self._on_blocked(Blocked(tp, pending.record.offset, route, reason))
        except Exception:  # the log line above still says it; the job must hold its lane
            log.exception("%s: on_blocked failed", pending.coordinates)
        await job.ownership.released.wait()

    def _finish(self, job: _Job, route: str, outcome: str) -> None:
        pending = job.pending
        self._metrics.messages.labels(pending.record.topic, route, outcome).inc()
        pending.remaining -= 1
        if pending.remaining == 0:
            self._on_finished(pending)
