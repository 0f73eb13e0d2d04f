"""A job: one invocation to take to its end, and the records it finishes when it does.

A single job finishes one record's invocation of one route; a batch job finishes the invocations
of every record of its batch (:attr:`Job.members`). Whatever ends a job (accepted, dead-lettered,
skipped by the operator) ends it for all of its records at once: no path can finish a batch's
first record and leave the others waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.offsets import TopicPartition
from ..core.routing import Invocation, Poison
from .decisions import GiveUp
from .holds import Hold
from .lease import Lease, PendingRecord

if TYPE_CHECKING:  # OpenTelemetry is an optional extra: imported only with spans on
    from ..tracing.spans import RecordSpan

log = logging.getLogger(__name__)

Member = tuple[PendingRecord, Invocation]
"""One record of a batch and its own invocation (the body is the record's JSON item)."""


class Fence:
    """Jobs planned before a reload changed how their route's lanes are formed. Jobs of the
    same partition planned after it, by such a route, wait until these ended: a key's next
    record may land in another lane than the one still retrying its previous record."""

    __slots__ = ("_done", "jobs")

    def __init__(self, jobs: set[Job]) -> None:
        self.jobs = jobs
        self._done = asyncio.Event()
        if not jobs:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def ended(self, job: Job) -> None:
        self.jobs.discard(job)
        if not self.jobs:
            self._done.set()

    async def wait(self) -> None:
        await self._done.wait()


@dataclass(eq=False, slots=True)
class Job:
    """One invocation of ``item.route`` for the records in ``tickets``."""

    item: Invocation | Poison
    tickets: tuple[PendingRecord, ...]
    """The records this job finishes: one, or a batch's in offset order."""
    members: tuple[Member, ...] = ()
    """A batch job's records with their own invocations (to send them one by one)."""
    gave_up: GiveUp | None = None
    """Why sending gave up, when it did."""
    maybe_accepted: bool = False
    """A send's answer was lost (timeout, broken connection, 5xx): Restate may have accepted it."""
    hold: Hold | None = None
    """While the job is held at its blocked partition."""
    fence: Fence | None = None
    """Jobs planned before a reload that this laned job must not overtake."""
    signature: Hashable = None
    """How its route formed its lane when it was planned (a reload may change it)."""
    span: RecordSpan | None = None
    """The record's span for this route, with ``[tracing] spans = true``."""
    park: Callable[[], Awaitable[None]] | None = None
    """An operator's skip: park the record (produce or log it) instead of sending."""

    @property
    def pending(self) -> PendingRecord:
        return self.tickets[0]

    @property
    def lease(self) -> Lease:
        return self.tickets[0].lease

    @property
    def tp(self) -> TopicPartition:
        return self.tickets[0].lease.tp

    @property
    def route(self) -> str:
        return self.item.route

    @property
    def lane(self) -> tuple[Any, ...] | None:
        item = self.item
        if isinstance(item, Invocation):
            return item.lane
        return None if item.held is None else item.held.lane

    @property
    def stale(self) -> bool:
        """Its partition was revoked (or delivery closed) since it was submitted."""
        return self.tickets[0].lease.ended

    @property
    def coordinates(self) -> str:
        return self.tickets[0].coordinates

    @property
    def is_batch(self) -> bool:
        return bool(self.members)

    def explain(self, decision: GiveUp, error: Exception) -> str:
        """``decision``'s reason, logged with the traceback when the failure was unexpected (a
        bug, or a value the client could not handle)."""
        if decision.unexpected:
            log.error(
                "%s: route %s: %s", self.coordinates, self.route, decision.reason, exc_info=error
            )
        return decision.reason
