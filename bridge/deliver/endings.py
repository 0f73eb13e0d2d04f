"""How a job ends: its records finish, go to the dead-letter topic, or block their partition.

Every ending applies to all the records a job holds (:attr:`bridge.deliver.jobs.Job.tickets`).
A record that can never succeed is dead-lettered; when there is no dead-letter topic, when the
dead letter cannot be written, or when the route's ``block_on`` says so, the job is held at its
partition (a :class:`bridge.deliver.holds.Hold`) until the operator releases it or the
partition is revoked. Meanwhile its records stay unfinished, so nothing past them is committed.
"""

from __future__ import annotations

import logging

from ..operate.metrics import Metrics
from ..sinks.deadletter import DeadLetter, DeadLetterSink
from .decisions import Block, DropValue, Policy, after_dead_letter_failure
from .holds import Held, Hold
from .jobs import Job
from .lanes import Lanes
from .lease import PendingRecord
from .ports import Outcomes
from .retry import Again, Done, persist

log = logging.getLogger(__name__)


class Retry(Exception):
    """Raised out of :meth:`Endings.block` when the operator asks to run the job again."""


class Endings:
    """Finishes, dead-letters and holds jobs; reports each to ``outcomes``."""

    def __init__(
        self,
        outcomes: Outcomes,
        metrics: Metrics,
        dead_letters: DeadLetterSink | None,
        lanes: Lanes,
        policy: Policy,
    ) -> None:
        self._outcomes = outcomes
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._lanes = lanes
        self._policy = policy

    def finish(self, job: Job, outcome: str, tickets: tuple[PendingRecord, ...] = ()) -> None:
        """Count the job's invocation of each of its records (or of ``tickets``) as ``outcome``
        and report every record whose invocations are all done."""
        for pending in tickets or job.tickets:
            self._metrics.message_counter(pending.record.topic, job.route, outcome).inc()
            pending.remaining -= 1
            if pending.remaining == 0:
                self._outcomes.finished(pending)

    async def reject(self, job: Job, reason: str) -> None:
        """Dead-letter the job's records (one dead letter each, in offset order), or hold the job
        when there is no dead-letter topic or a dead letter cannot be written. Raises
        :class:`Retry` when the operator releases a hold with ``retry``."""
        sink = self._dead_letters
        if sink is None:
            await self.block(job, reason)
            return
        for n, pending in enumerate(job.tickets):
            letter = DeadLetter(pending.record, job.route, reason)
            written = await self._write(job, sink, letter)
            if written is None:
                return  # revoked: the next owner handles the records
            if isinstance(written, Block):
                rest = job.tickets[n:]
                await self.block(job, f"{written.reason} (dead letter for: {reason})", rest)
                return
            log.warning("dead-lettered %s (route %s): %s", letter.coordinates, job.route, reason)
            if job.span is not None:
                job.span.failed("dead_lettered", reason)
            self._outcomes.dead_lettered(letter)
            self.finish(job, "dead_lettered", (pending,))

    async def _write(
        self, job: Job, sink: DeadLetterSink, letter: DeadLetter
    ) -> Block | bool | None:
        """Produce ``letter`` until written (True) or a decision blocks; ``None``: revoked."""
        drop_value: str | None = None

        async def attempt(failed: int) -> None:
            await sink.send(letter, drop_value=drop_value)

        def judge(error: Exception, failed: int) -> Again | Block:
            nonlocal drop_value
            self._metrics.dead_letter_errors.inc()
            decision = after_dead_letter_failure(
                error, failed, drop_value is not None, self._policy
            )
            if isinstance(decision, Block):
                return decision
            if isinstance(decision, DropValue):
                log.warning(
                    "%s: dead letter refused (%s); sending it without the value",
                    letter.coordinates,
                    decision.why,
                )
                drop_value = decision.why
                return Again(0.0, counts=False)
            log.warning("%s: dead-letter produce failed (%s); retrying", letter.coordinates, error)
            return Again(decision.delay)

        outcome = await persist(job.lease, attempt, judge)
        return True if isinstance(outcome, Done) else outcome

    def retrying(self, job: Job) -> None:
        """The operator released the job: it runs again with fresh attempts."""
        job.gave_up = None
        log.info("%s: route %s: released by the operator; retrying", job.coordinates, job.route)

    async def internal_error(self, job: Job, exc: Exception) -> None:
        """A bug while handling ``job``: it must not take the lane (and the partition) with it.
        The job is held visibly with the error as its reason (raises :class:`Retry` as
        :meth:`block` does)."""
        reason = f"internal error: {type(exc).__name__}: {exc}"
        log.error("%s: %s", job.coordinates, reason, exc_info=exc)
        await self.block(job, reason)

    async def block(
        self,
        job: Job,
        reason: str,
        tickets: tuple[PendingRecord, ...] = (),
        *,
        by_policy: bool = False,
    ) -> bool:
        """Hold the job (and its lane) at its blocked partition until the operator releases it
        or the partition is revoked. ``tickets``: the records held (all of the job's by default).

        Released with ``skip``: those records finish as skipped and True is returned; with
        ``retry``: raises :class:`Retry`. False when the lease ended first."""
        tickets = tickets or job.tickets
        first = tickets[0]
        tp = first.tp
        log.error(
            "%s: partition %s-%d blocked at offset %d: route %s: %s (%s, then release it: POST "
            "/admin/partitions/%s/%d/release%s)",
            first.coordinates,
            tp.topic,
            tp.partition,
            first.record.offset,
            job.route,
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
        held = Held(tuple(p.record for p in tickets), job.route, reason)
        hold = job.hold = Hold(held, first.lease, by_policy=by_policy)
        try:
            with self._lanes.waiting(job):
                try:
                    self._outcomes.held(hold)
                except Exception:  # the log line above still says it; the job must hold its lane
                    log.exception("%s: reporting the block failed", first.coordinates)
                action = await hold.wait()
        finally:
            job.hold = None
            self._outcomes.hold_ended(hold)
        if action is None:
            return False
        if action == "retry":
            raise Retry
        self.finish(job, "skipped", tickets)
        return True
