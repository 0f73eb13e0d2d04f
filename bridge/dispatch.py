"""Sending invocations: per-key lanes in offset order, in-flight limits, retries, dead letters.

A lane is the ordering unit: every invocation with the same ``lane`` (an object key or workflow id
of one service, or one partition of a route) is sent only after the previous one was accepted.
Invocations without a lane go in parallel. Retryable failures are retried forever; a record that
can never succeed goes to the dead-letter topic, or, without one, blocks its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from .backoff import Backoff
from .config import DeliveryConfig
from .deadletter import DeadLetter, DeadLetterSink
from .health import IngressHealth
from .ingress import NO_INPUT, Client, IngressError, SendReceipt
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


@dataclass(frozen=True, slots=True)
class Blocked:
    """A partition stopped at a record that can never succeed (no dead-letter topic)."""

    tp: TopicPartition
    offset: int
    route: str
    reason: str


@dataclass(slots=True)
class _Job:
    pending: PendingRecord
    item: Invocation | Poison


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
        self._backoff = Backoff(
            delivery.retry_initial.total_seconds(), delivery.retry_max.total_seconds()
        )
        self._grace = delivery.unknown_target_grace.total_seconds()
        self._global = asyncio.Semaphore(delivery.max_in_flight)
        self._route_limits = {
            name: asyncio.Semaphore(limit) for name, limit in route_limits.items() if limit
        }
        self._lanes: dict[tuple[Any, ...], deque[_Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped: set[TopicPartition] = set()

    # -- intake ----------------------------------------------------------------------------

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        job = _Job(pending, item)
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
        """Stop work for revoked partitions: queued jobs are skipped, results ignored."""
        self._dropped |= tps

    def resume(self, tps: set[TopicPartition]) -> None:
        self._dropped -= tps

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Cancel everything still under way (after the caller's drain timed out)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # a bug, not a delivery failure: its records stay unfinished, so nothing past them
            # is committed and a restart redelivers them
            log.error("dispatch task failed; its partition stops advancing", exc_info=exc)

    async def _run_lane(self, lane: tuple[Any, ...]) -> None:
        queue = self._lanes[lane]
        try:
            while queue:
                await self._run(queue[0])
                queue.popleft()
        finally:
            del self._lanes[lane]

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        if job.pending.tp in self._dropped:
            return
        item = job.item
        if isinstance(item, Poison):
            await self._dead_letter(job, item.route, item.reason)
        else:
            await self._deliver(job, item)

    async def _deliver(self, job: _Job, inv: Invocation) -> None:
        metrics, route = self._metrics, inv.route
        target = inv.target(self._client)
        body: Any = NO_INPUT if inv.body is None else inv.body
        route_limit = self._route_limits.get(route)
        attempt = 0
        missing_since: float | None = None
        while True:
            if job.pending.tp in self._dropped:
                return
            error: IngressError | None = None
            async with self._global:
                if route_limit is not None:
                    await route_limit.acquire()
                gauge = metrics.in_flight.labels(route)
                gauge.inc()
                started = time.perf_counter()
                try:
                    receipt: SendReceipt = await target.send(
                        body,
                        content_type=inv.content_type,
                        delay=inv.delay,
                        idempotency_key=inv.idempotency_key,
                        headers=inv.headers,
                        timeout=self._timeout,
                    )
                except IngressError as exc:
                    error = exc
                finally:
                    gauge.dec()
                    if route_limit is not None:
                        route_limit.release()
            if error is None:
                metrics.ingress_latency.labels(route).observe(time.perf_counter() - started)
                self._health.mark_up()
                outcome = "duplicate" if receipt.duplicate else "accepted"
                self._finish(job, route, outcome)
                return
            reason = error.reason
            metrics.ingress_errors.labels(route, reason).inc()
            retry_after = error.retry_after
            if error.retryable:
                if reason in ("connect", "timeout", "http_5xx"):
                    self._health.mark_down(f"{reason}: {error}")
                metrics.retries.labels(route).inc()
                await asyncio.sleep(self._backoff.delay(attempt, retry_after))
                attempt += 1
                continue
            if error.status == 404 and error.source != "invocation":
                # maybe a deployment still registering: retry for the grace period
                now = time.monotonic()
                missing_since = missing_since or now
                if now - missing_since < self._grace:
                    if attempt == 0:
                        log.warning("route %s: %s; retrying for %.0fs", route, error, self._grace)
                    metrics.retries.labels(route).inc()
                    await asyncio.sleep(self._backoff.delay(attempt, retry_after))
                    attempt += 1
                    continue
            await self._dead_letter(job, route, f"ingress answered {error}")
            return

    async def _dead_letter(self, job: _Job, route: str, reason: str) -> None:
        rec = job.pending.record
        if self._dead_letters is None:
            log.error(
                "partition %s-%d blocked at offset %d: route %s: %s (no [dead_letter] topic; "
                "fix the cause or configure one, then restart)",
                rec.topic, rec.partition, rec.offset, route, reason,
            )  # fmt: skip
            self._on_blocked(Blocked(job.pending.tp, rec.offset, route, reason))
            await asyncio.Event().wait()  # holds its lane and partition until shutdown
            return
        attempt = 0
        while True:
            try:
                await self._dead_letters.send(rec, route, reason)
                break
            except KafkaError as exc:
                self._metrics.dead_letter_errors.inc()
                log.warning("dead-letter produce failed (%s); retrying", exc)
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
        log.warning(
            "dead-lettered %s-%d@%d (route %s): %s",
            rec.topic, rec.partition, rec.offset, route, reason,
        )  # fmt: skip
        self._on_dead_letter(DeadLetter(rec, route, reason))
        self._finish(job, route, "dead_lettered")

    def _finish(self, job: _Job, route: str, outcome: str) -> None:
        pending = job.pending
        self._metrics.messages.labels(pending.record.topic, route, outcome).inc()
        pending.remaining -= 1
        if pending.remaining == 0:
            self._on_finished(pending)
