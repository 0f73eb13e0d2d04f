"""Per-key lanes: every job with the same lane runs only after the previous one ended.

A lane is the ordering unit (an object key or workflow id of one service, or one partition of a
route; :attr:`bridge.core.routing.Invocation.lane`). Jobs without a lane run at once. The lanes
also keep the account of live jobs per partition, which of them wait for the operator (at a pause,
or held at a blocked partition), and the fences a reload puts between a route's old and new lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from ..core.offsets import TopicPartition
from .jobs import Fence, Job

log = logging.getLogger(__name__)


class Lanes:
    """Runs jobs through ``run``, in lane order; owns every task it starts."""

    def __init__(self, run: Callable[[Job], Awaitable[None]]) -> None:
        self._run = run
        self._queues: dict[tuple[Any, ...], deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: dict[TopicPartition, set[Job]] = {}
        """Jobs submitted and not yet ended, per partition."""
        self._waiting: set[Job] = set()
        """Jobs waiting for the operator: at a pause, or held."""
        self._fences: dict[TopicPartition, Fence] = {}

    # -- intake ----------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Count ``job`` live and run it: now, or after the jobs ahead of it in its lane."""
        self._live.setdefault(job.tp, set()).add(job)
        lane = job.lane
        if lane is None:
            self.spawn(self._run_one(job))
            return
        queue = self._queues.get(lane)
        if queue is None:
            self._queues[lane] = deque([job])
            self.spawn(self._run_lane(lane))
        else:
            queue.append(job)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def ended(self, job: Job) -> None:
        """``job`` is over (whatever became of its records)."""
        live = self._live.get(job.tp)
        if live is not None:
            live.discard(job)
            if not live:
                del self._live[job.tp]
        fence = self._fences.get(job.tp)
        if fence is not None:
            fence.ended(job)
            if fence.done:
                del self._fences[job.tp]

    @property
    def busy(self) -> int:
        """Jobs submitted and not yet ended (queued, sending, retrying, held or replying)."""
        return sum(len(jobs) for jobs in self._live.values())

    # -- fences across reloads -------------------------------------------------------------

    def fence(self, stale: Callable[[Job], bool]) -> None:
        """The live laned jobs that are ``stale`` (a reload changed how their lanes are formed)
        fence their partition from now on (:meth:`fence_of`), in place of earlier fences."""
        self._fences = {}
        for tp, jobs in self._live.items():
            old = {job for job in jobs if job.lane is not None and stale(job)}
            if old:
                self._fences[tp] = Fence(old)

    def fence_of(self, tp: TopicPartition) -> Fence | None:
        """The fence a new laned job of ``tp`` of a re-laned route waits for, if any."""
        return self._fences.get(tp)

    # -- the operator's waits --------------------------------------------------------------

    @contextlib.contextmanager
    def waiting(self, job: Job) -> Iterator[None]:
        """``job`` waits for the operator (at a pause, or held) meanwhile."""
        self._waiting.add(job)
        try:
            yield
        finally:
            self._waiting.discard(job)

    def unsettled(self, tps: set[TopicPartition]) -> int:
        """Jobs of ``tps`` that may still end on their own: not waiting for the operator (a held
        job whose release is under way is not waiting), nor queued in a lane behind one that is.
        A drain waits for these."""
        waiting: Counter[TopicPartition] = Counter()
        lanes = set()
        for job in self._waiting:
            if job.hold is not None and job.hold.claimed:
                continue
            waiting[job.tp] += 1
            if job.lane is not None:
                lanes.add(job.lane)
        for lane in lanes:  # each lane's queue once (a reply task may share its head's lane)
            for queued in self._queues.get(lane, ()):
                waiting[queued.tp] += 1
        return sum(max(0, len(self._live.get(tp, ())) - waiting[tp]) for tp in tps)

    # -- running ---------------------------------------------------------------------------

    async def _run_lane(self, lane: tuple[Any, ...]) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                job = queue.popleft()
                await self._run_one(job)
        finally:
            del self._queues[lane]

    async def _run_one(self, job: Job) -> None:
        if job.fence is not None and not job.fence.done:
            await job.lease.unless_ended(job.fence.wait())
        await self._run(job)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # a job catches everything a record can cause: this is a bug in delivery itself
            log.error("delivery task failed", exc_info=exc)

    async def aclose(self) -> None:
        """Cancel every task; no task is left behind. Safe to call twice."""
        while self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._live.clear()  # a task cancelled before its first step never ended its job
        self._fences.clear()
