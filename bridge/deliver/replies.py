"""Reply routes: after the ingress accepted, wait for the invocation's result and produce it.

The lane goes on at once after the 202 (the next record of the key may be sent); a task of its
own attaches to the invocation by its id, produces the reply and only then finishes the record.
It holds a reply slot (``max_waiting_replies``) from before the send until the reply is produced,
never a send slot. Past the route's maximum wait the record is dead-lettered (the invocation keeps
running in Restate); a reply that cannot be produced yet (a missing topic, a broker away) is
retried without end, visibly, and its record stays unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Literal

from ..core.routing import Invocation
from ..ingress import Client, SendReceipt
from ..operate.metrics import Metrics
from ..sinks.replies import Failed, Reply, ReplySink, ReplyTopicMissing, Succeeded
from .decisions import GiveUp, Policy, after_attach_failure, after_reply_failure
from .endings import Endings, Retry
from .health import IngressHealth
from .jobs import Job
from .lanes import Lanes
from .lease import ENDED, LeaseEnded
from .retry import Again, Done, persist

log = logging.getLogger(__name__)


class ReplyWaiter:
    """Attaches to accepted invocations of reply routes and produces their results."""

    def __init__(
        self,
        clients: Sequence[Client],
        health: IngressHealth,
        sink: ReplySink | None,
        slots: asyncio.Semaphore,
        metrics: Metrics,
        endings: Endings,
        lanes: Lanes,
        policy: Policy,
    ) -> None:
        self._clients = tuple(clients)
        self._health = health
        self._sink = sink
        self._slots = slots
        self._metrics = metrics
        self._endings = endings
        self._lanes = lanes
        self._policy = policy
        self.missing_topics: dict[str, int] = {}
        """Reply topics that do not exist, with how many replies wait for each (for /readyz)."""

    async def run(self, job: Job, inv: Invocation, receipt: SendReceipt) -> None:
        """Own ``job`` from its accept on, with the reply slot the caller took before sending:
        attach, produce the reply, finish the record; a reply that cannot be had is
        dead-lettered (or blocks) without a slot. Ends the job; raises nothing but cancellation."""
        gauge = self._metrics.waiting_replies
        gauge.inc()
        held = True
        try:
            while True:
                try:
                    if not held:  # released blocked by the operator: wait for the result again
                        await self._slots.acquire()
                        gauge.inc()
                        held = True
                    try:
                        reason = await self._reply(job, inv, receipt)
                    except Exception as exc:  # a bug: the record must not finish unanswered
                        gauge.dec()
                        self._slots.release()
                        held = False
                        await self._endings.internal_error(job, exc)
                        return
                    if reason is not None:
                        gauge.dec()
                        self._slots.release()  # a dead letter (or a block) needs no slot
                        held = False
                        await self._endings.reject(job, reason)
                    return
                except Retry:
                    self._endings.retrying(job)
        finally:
            if held:
                gauge.dec()
                self._slots.release()
            self._lanes.ended(job)

    async def _reply(self, job: Job, inv: Invocation, receipt: SendReceipt) -> str | None:
        """Attach and produce the reply; the reason when it cannot be had, else ``None`` (done,
        or revoked meanwhile)."""
        result = await self._attach(job, inv, receipt.invocation_id)
        if result is None or isinstance(result, str):
            return result
        assert inv.reply is not None
        reply = Reply(
            job.pending.record,
            inv.reply.topic,
            receipt.invocation_id,
            result,
            inv.reply.correlation_header,
        )
        produced = await self._produce(job, reply)
        if produced is True:
            status = "ok" if isinstance(result, Succeeded) else "error"
            self._metrics.replies.labels(inv.route, status).inc()
            self._endings.finish(job, "duplicate" if receipt.duplicate else "accepted")
            return None
        return produced

    async def _attach(
        self, job: Job, inv: Invocation, invocation_id: str
    ) -> Succeeded | Failed | str | None:
        """Wait for the invocation's result (or its terminal error) until the route's maximum
        wait; the dead-letter reason when it does not come; ``None`` when revoked meanwhile."""
        assert inv.reply is not None
        route, max_wait = inv.route, inv.reply.max_wait
        started = time.monotonic()
        deadline = started + max_wait

        async def attempt(failed: int) -> Succeeded:
            # any node that is up: the invocation lives in the cluster, not in one node
            handle = self._clients[self._health.pick()].invocation(invocation_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no result within {max_wait}s")
            output = await job.lease.unless_ended(handle.attach(output=bytes, timeout=remaining))
            if output is ENDED:
                raise LeaseEnded
            assert isinstance(output, bytes)
            return Succeeded(output)

        def judge(error: Exception, failed: int) -> Again | Failed | str:
            decision = after_attach_failure(
                error, failed, time.monotonic(), deadline, max_wait, invocation_id, self._policy
            )
            if isinstance(decision, Failed):
                return decision
            self._metrics.reply_errors.labels(route, decision.label).inc()
            if isinstance(decision, GiveUp):
                return job.explain(decision, error)
            log.warning(
                "%s: route %s: attaching to %s failed (%s); retrying",
                job.coordinates,
                route,
                invocation_id,
                error,
            )
            return Again(decision.delay)

        outcome: Done[Succeeded] | Failed | str | None = await persist(job.lease, attempt, judge)
        if isinstance(outcome, Done | Failed):
            self._metrics.reply_wait.labels(route).observe(time.monotonic() - started)
        return outcome.value if isinstance(outcome, Done) else outcome

    async def _produce(self, job: Job, reply: Reply) -> Literal[True] | str | None:
        """Produce the reply until it is written (``True``) or refused for good (the reason);
        ``None`` when revoked meanwhile. A missing topic is retried and reported."""
        sink = self._sink
        if sink is None:
            raise RuntimeError("a reply route without a reply producer")
        route = job.route
        missing = False

        async def attempt(failed: int) -> None:
            await sink.send(reply)

        def judge(error: Exception, failed: int) -> Again | str:
            nonlocal missing
            decision = after_reply_failure(error, failed, self._policy)
            self._metrics.reply_errors.labels(route, decision.label).inc()
            if isinstance(decision, GiveUp):
                return job.explain(decision, error)
            if isinstance(error, ReplyTopicMissing) and not missing:
                missing = True
                self.missing_topics[reply.topic] = self.missing_topics.get(reply.topic, 0) + 1
            if failed & (failed - 1) == 0:  # failures 0, 1, 2, 4, 8, ...: say it, not flood
                log.warning(
                    "%s: route %s: reply to topic %s not produced (%s); retrying, the record "
                    "stays uncommitted (attempt %d)",
                    job.coordinates,
                    route,
                    reply.topic,
                    error,
                    failed + 1,
                )
            return Again(decision.delay)

        try:
            outcome = await persist(job.lease, attempt, judge)
        finally:
            if missing:
                left = self.missing_topics[reply.topic] - 1
                if left:
                    self.missing_topics[reply.topic] = left
                else:
                    del self.missing_topics[reply.topic]
        return True if isinstance(outcome, Done) else outcome
