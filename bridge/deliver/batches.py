"""Batch routes: gathering records into batches, and taking a batch to its end.

Records are gathered per *group* (route, partition, and for an object its key, scope and limit
key: one batch is one invocation). A group is finer than a lane, so the :class:`Batcher` keeps at
most one open batch per lane: a record of the lane that cannot join it (another group, or a
record of a route without batches) closes it first. Batches thus enter their lane in offset
order, and a key's invocations reach Restate in offset order whatever the routes.

A closed batch is one job (:class:`BatchRunner`): accepted, every record finishes; refused for
good with a 4xx (not an unknown target), it is sent again record by record so that only the bad
records are dead-lettered, unless an earlier send's answer was lost (Restate may have accepted
the batch: its records are dead-lettered rather than run twice under new keys); blocked by
``block_on``, the whole batch is held, and skipping it finishes every record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from ..core.batching import Accumulator, Batch, batch_body, batch_idempotency_key
from ..core.routing import Invocation
from ..ingress import SendReceipt
from ..operate.metrics import Metrics
from .decisions import GiveUp
from .endings import Endings, Retry
from .jobs import Job, Member
from .lease import PendingRecord
from .limits import Limits
from .sender import Sender

log = logging.getLogger(__name__)


def splits(gave_up: GiveUp) -> bool:
    """A batch refused for good with a 4xx answer (not an unknown target) may be retried record
    by record: the ingress may refuse the batch for one record (or for its size)."""
    return gave_up.label.startswith("http_4") and gave_up.label != "http_404"


class Batcher:
    """Open batches, closed by size, by ``max_wait``, by a lane's next record, or by
    :meth:`flush`; each closed batch goes to ``closed``."""

    def __init__(self, closed: Callable[[Batch[Member]], None]) -> None:
        self._closed = closed
        self._open: Accumulator[Member] = Accumulator()
        self._open_in_lane: dict[tuple[Any, ...], Any] = {}
        """The group of each lane's open batch."""
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = 0.0
        self._wake = asyncio.Event()

    def add(self, pending: PendingRecord, inv: Invocation) -> None:
        """Gather a batch route's record into its group's batch."""
        config = inv.batch
        assert config is not None
        assert inv.body is not None
        rec = pending.record
        key = inv.key if inv.kind == "object" else None
        group = (inv.route, rec.topic, rec.partition, key, inv.scope, inv.limit_key)
        lane = inv.lane
        if lane is not None:
            self.close_lane(lane, unless=group)
        opens = group not in self._open
        now = time.monotonic()
        for batch in self._open.add(
            group,
            inv.route,
            config,
            rec.topic,
            rec.partition,
            rec.offset,
            len(inv.body),
            (pending, inv),
            now,
        ):
            self._close(batch)
        if group in self._open:
            if lane is not None:
                self._open_in_lane[lane] = group
            if opens:
                self._arm(now + config.max_wait.total_seconds())

    def close_lane(self, lane: tuple[Any, ...], unless: Any = None) -> None:
        """Close the lane's open batch unless it is of group ``unless``: the lane's next record
        cannot join it, and must not overtake it."""
        group = self._open_in_lane.get(lane)
        if group is not None and group != unless:
            batch = self._open.close(group)
            if batch is not None:
                self._close(batch)

    def flush(self, routes: Collection[str] | None = None) -> None:
        """Close every open batch now (only those of ``routes`` when given)."""
        where = None if routes is None else (lambda batch: batch.route in routes)
        for batch in self._open.take(where):
            self._close(batch)

    def _close(self, batch: Batch[Member]) -> None:
        lane = batch.tickets[0][1].lane
        if lane is not None and self._open_in_lane.get(lane) == batch.group:
            del self._open_in_lane[lane]
        if batch.tickets[0][0].lease.ended:
            return  # revoked before it closed: the next owner reads its records again
        self._closed(batch)

    def _arm(self, deadline: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._close_due())
        elif deadline < self._timer_at:
            self._wake.set()

    async def _close_due(self) -> None:
        """Close each batch when its ``max_wait`` has passed; ends when none is open."""
        try:
            while (deadline := self._open.next_deadline()) is not None:
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._timer_at = deadline
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                for batch in self._open.due(time.monotonic()):
                    self._close(batch)
        finally:
            self._timer = None

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer


def batch_job(batch: Batch[Member]) -> Job:
    """The job of a closed batch: one invocation, the records' items as its JSON array body."""
    members = tuple(batch.tickets)
    first = members[0][1]
    body = batch_body([inv.body for _, inv in members if inv.body is not None])
    idem = batch.idempotency_key() if first.batch and first.batch.idempotent else None
    inv = dataclasses.replace(first, body=body, idempotency_key=idem)
    return Job(inv, tuple(p for p, _ in members), members)


class BatchRunner:
    """Takes batch jobs to their end (module docstring)."""

    def __init__(self, sender: Sender, limits: Limits, endings: Endings, metrics: Metrics) -> None:
        self._sender = sender
        self._limits = limits
        self._endings = endings
        self._metrics = metrics

    async def run(self, job: Job) -> None:
        """Raises nothing but cancellation."""
        while True:
            try:
                await self._once(job)
                return
            except Retry:
                self._endings.retrying(job)

    async def _once(self, job: Job) -> None:
        inv = job.item
        assert isinstance(inv, Invocation)
        try:
            if job.stale or (self._limits.paused(job) and not await self._limits.unpaused(job)):
                return
            await self._limits.throttle(job, len(job.members))
            if job.stale:
                return
            sent = await self._sender.deliver(job, inv)
            if sent is None:
                return
            if isinstance(sent, SendReceipt):
                self._accepted(job, sent)
            elif sent.block:
                await self._endings.block(job, sent.reason, by_policy=True)
            elif len(job.members) > 1 and splits(sent) and not job.maybe_accepted:
                log.warning(
                    "%s: route %s: a batch of %d records was refused (%s); retrying it record "
                    "by record",
                    job.coordinates,
                    job.route,
                    len(job.members),
                    sent.reason,
                )
                await self._singles(job.members)
            else:
                reason = sent.reason
                if len(job.members) > 1 and splits(sent):
                    reason += (
                        " (not retried record by record: an earlier send's answer was lost, "
                        "so Restate may have accepted the batch)"
                    )
                self._metrics.invocations.labels(job.route, "dead_lettered").inc()
                await self._reject_members(job, reason)
        except Retry:
            raise
        except Exception as exc:  # a bug: it must not take the lane (and the partition) with it
            await self._endings.internal_error(job, exc)

    def _accepted(self, job: Job, receipt: SendReceipt) -> None:
        outcome = "duplicate" if receipt.duplicate else "accepted"
        self._metrics.invocations.labels(job.route, outcome).inc()
        self._endings.finish(job, outcome)

    async def _reject_members(self, job: Job, reason: str) -> None:
        """Dead-letter each record; one released to ``retry`` after its dead letter blocked
        goes again with the rest, one by one."""
        for n, (pending, single) in enumerate(job.members):
            one = Job(single, (pending,))
            if one.stale:
                return
            try:
                await self._endings.reject(one, reason)
            except Retry:
                self._endings.retrying(one)
                await self._singles(job.members[n:])
                return

    async def _singles(self, members: tuple[Member, ...]) -> None:
        """Send a refused batch's records one by one (each a batch of one, in offset order):
        only the records the ingress refuses are dead-lettered (or block, until released)."""
        for pending, item in members:
            assert item.body is not None
            rec = pending.record
            idem = None
            if item.batch is not None and item.batch.idempotent:
                idem = batch_idempotency_key(
                    item.route, rec.topic, rec.partition, rec.offset, rec.offset
                )
            inv = dataclasses.replace(item, body=batch_body([item.body]), idempotency_key=idem)
            one = Job(inv, (pending,), ((pending, inv),))
            while True:
                try:
                    if not await self._single(one, inv):
                        return  # revoked
                    break
                except Retry:
                    self._endings.retrying(one)

    async def _single(self, one: Job, inv: Invocation) -> bool:
        """One record of a split batch; False when its lease ended."""
        sent = await self._sender.deliver(one, inv)
        if sent is None:
            return False
        if isinstance(sent, SendReceipt):
            self._accepted(one, sent)
        elif sent.block:
            await self._endings.block(one, sent.reason, by_policy=True)
        else:
            self._metrics.invocations.labels(inv.route, "dead_lettered").inc()
            await self._endings.reject(one, sent.reason)
        return not one.stale
