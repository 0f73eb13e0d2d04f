"""Taking one job of one record to its end.

A job waits while its route or topic is paused, takes its rate-limit tokens, sends until the
ingress accepts or a decision gives up, then finishes its record, hands it to the reply waiter
(reply routes), dead-letters it or holds it at its blocked partition. Nothing a record holds can
end the job's lane: every exception while handling it becomes a visible block with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..core.routing import Poison
from ..ingress import SendReceipt
from .endings import Endings, Retry
from .jobs import Job
from .lanes import Lanes
from .limits import Limits
from .replies import ReplyWaiter
from .sender import Sender

log = logging.getLogger(__name__)


class JobRunner:
    """Runs single jobs (and the operator's skips) to their end."""

    def __init__(
        self,
        sender: Sender,
        limits: Limits,
        endings: Endings,
        replies: ReplyWaiter,
        lanes: Lanes,
    ) -> None:
        self._sender = sender
        self._limits = limits
        self._endings = endings
        self._replies = replies
        self._lanes = lanes

    async def run(self, job: Job) -> bool:
        """Accepted, dead-lettered, held (until released, revoked or closed) or abandoned
        because its lease ended; True when a reply task took the job over (it ends the job).
        Raises nothing but cancellation."""
        try:
            while True:
                try:
                    return await self._once(job)
                except Retry:
                    self._endings.retrying(job)
        finally:
            if job.span is not None:  # revoked or cancelled before it finished
                job.span.abandoned()

    async def _once(self, job: Job) -> bool:
        item = job.item
        slot = False
        try:
            if job.stale or (self._limits.paused(job) and not await self._limits.unpaused(job)):
                return False
            if isinstance(item, Poison):
                if item.held is None:
                    await self._endings.reject(job, item.reason)
                    return False
                try:  # held by the route's rule until the operator decides
                    await self._endings.block(job, item.reason, by_policy=True)
                except Retry:
                    job.item = item.held  # retried: sent as planned after all
                    raise
                return False
            # before any slot: a job waiting for its route's rate holds none others need
            if self._limits.limited(item.route):
                await self._limits.throttle(job, 1)
                if job.stale:
                    return False
            if item.reply is not None:
                await self._limits.reply_slots.acquire()
                slot = True
            sent = await self._sender.deliver(job, item)
            if sent is None:
                return False
            if isinstance(sent, SendReceipt):
                if job.span is not None:
                    job.span.accepted(sent.duplicate)
                if item.reply is None:
                    self._endings.finish(job, "duplicate" if sent.duplicate else "accepted")
                    return False
                # the reply waiter owns the job (and its reply slot) from here
                self._lanes.spawn(self._replies.run(job, item, sent))
                slot = False
                return True
            if sent.block:
                await self._endings.block(job, sent.reason, by_policy=True)
            else:
                await self._endings.reject(job, sent.reason)
            return False
        except Retry:
            raise
        except Exception as exc:  # a bug: it must not take the lane (and the partition) with it
            await self._endings.internal_error(job, exc)
            return False
        finally:
            if slot:
                self._limits.reply_slots.release()

    async def run_skip(self, job: Job, park: Callable[[], Awaitable[None]]) -> None:
        """Park a record the operator skipped, then finish it; a failure holds it, visibly."""
        while not job.stale:
            try:
                try:
                    await park()
                except Exception as exc:  # whatever it is, the record must not be lost
                    reason = f"skip failed: {type(exc).__name__}: {exc}"
                    log.warning("%s: route %s: %s", job.coordinates, job.route, reason)
                    await self._endings.block(job, reason)
                else:
                    self._endings.finish(job, "skipped")
                return
            except Retry:
                self._endings.retrying(job)
