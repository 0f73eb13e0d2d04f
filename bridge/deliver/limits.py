"""How much may be under way: per-route and global send slots, rate limits, reply slots, and the
operator's pauses, all taken in one order.

A job takes its route's rate-limit tokens first (so a job held back by its rate holds nothing
others need), then its route's ``max_in_flight`` slot, then a global one. The operator's pauses
are checked before the tokens and again once the slots are held: a job that was already waiting
for a slot when its route was paused gives the slots back and waits, so nothing of a paused route
starts after the pause was answered.

Per-route settings are rebuilt by :meth:`Limits.configure` at start and on each reload; jobs
waiting for a route's tokens look again then (a removed or raised rate limit lets them go).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from ..config import DeliveryConfig, RouteConfig
from ..core.ratelimit import TokenBucket, default_burst
from ..operate.metrics import Metrics
from .decisions import Policy
from .jobs import Job
from .lanes import Lanes
from .ports import Pauses


def _event_swap(event: asyncio.Event) -> asyncio.Event:
    """Wake everyone waiting on ``event``; the new event to wait on."""
    event.set()
    return asyncio.Event()


class Limits:
    """Slots, tokens and pauses (module docstring); the sender takes the slots
    (:meth:`route_slots`, then :attr:`global_slots`)."""

    def __init__(
        self, delivery: DeliveryConfig, metrics: Metrics, pauses: Pauses, lanes: Lanes
    ) -> None:
        self._metrics = metrics
        self._pauses = pauses
        self._lanes = lanes
        self.policy = Policy.from_config(delivery)
        self.global_slots = asyncio.Semaphore(delivery.max_in_flight)
        self.reply_slots = asyncio.Semaphore(delivery.max_waiting_replies)
        self._route_slots: dict[str, tuple[int, asyncio.Semaphore]] = {}
        """Per route name: its ``max_in_flight`` and the semaphore that holds it."""
        self._buckets: dict[str, TokenBucket] = {}
        self._policies: dict[str, Policy] = {}
        self._pauses_changed = asyncio.Event()
        self._routes_changed = asyncio.Event()

    # -- settings --------------------------------------------------------------------------

    def configure(self, routes: Sequence[RouteConfig]) -> None:
        """Build every per-route setting from ``routes``: ``max_in_flight`` semaphores,
        ``rate_limit`` token buckets and status policies (``retry_on``, ...).

        A route whose ``max_in_flight`` or rate limit did not change keeps its semaphore or its
        bucket (sends under way and tokens spent carry over); a changed one starts afresh, full,
        and sends already holding a slot of the old semaphore release it there, so for a moment
        both limits' worth may be in flight. A route that is gone keeps its slots and policy
        (invocations planned before the reload are sent as planned) but not its rate limit.
        """
        now = time.monotonic()
        slots, policies = dict(self._route_slots), dict(self._policies)
        buckets: dict[str, TokenBucket] = {}
        for route in routes:
            name = route.name
            kept = slots.pop(name, None)
            if route.max_in_flight:
                if kept is None or kept[0] != route.max_in_flight:
                    kept = (route.max_in_flight, asyncio.Semaphore(route.max_in_flight))
                slots[name] = kept
            if route.rate_limit:
                capacity = float(route.rate_limit_burst or default_burst(route.rate_limit))
                bucket = self._buckets.get(name)
                if bucket is None or (bucket.rate, bucket.capacity) != (route.rate_limit, capacity):
                    bucket = TokenBucket.full(route.rate_limit, capacity, now)
                buckets[name] = bucket
            policies.pop(name, None)
            if route.statuses:
                policies[name] = dataclasses.replace(self.policy, statuses=route.statuses)
        self._route_slots, self._buckets, self._policies = slots, buckets, policies
        self._metrics.prepare_rate_limits((r.name, r.rate_limit) for r in routes)
        self._routes_changed = _event_swap(self._routes_changed)

    def policy_of(self, route: str) -> Policy:
        """The route's policy (its status lists), or the default one."""
        return self._policies.get(route, self.policy)

    def bucket(self, route: str) -> TokenBucket | None:
        """The route's rate-limit bucket, if it has a rate limit."""
        return self._buckets.get(route)

    def route_slots(self, route: str) -> tuple[int, asyncio.Semaphore] | None:
        """The route's ``max_in_flight`` and its semaphore, if it has one."""
        return self._route_slots.get(route)

    @property
    def routes_with_settings(self) -> dict[str, set[str]]:
        """Which routes have slots, buckets and status policies (for tests and the log)."""
        return {
            "slots": set(self._route_slots),
            "buckets": set(self._buckets),
            "policies": set(self._policies),
        }

    # -- pauses ----------------------------------------------------------------------------

    def pauses_changed(self) -> None:
        """The operator paused or resumed something: waiting jobs look again."""
        self._pauses_changed = _event_swap(self._pauses_changed)

    def paused(self, job: Job) -> bool:
        pauses = self._pauses
        return pauses.any_paused and pauses.is_paused(job.route, job.tp.topic)

    async def unpaused(self, job: Job) -> bool:
        """Wait while the job's route or topic is paused; False when its lease ended meanwhile."""
        if not self.paused(job):
            return not job.stale
        with self._lanes.waiting(job):
            while self.paused(job) and not job.stale:
                await job.lease.unless_ended(self._pauses_changed.wait())
        return not job.stale

    # -- tokens and slots ------------------------------------------------------------------

    def limited(self, route: str) -> bool:
        """Whether ``route`` has a rate limit (the fast path skips :meth:`throttle`)."""
        return route in self._buckets

    async def throttle(self, job: Job, records: int) -> None:
        """Wait until the route's rate limit lets ``records`` records go (a batch takes one token
        per record, once: retries take none), or until the job's lease ends. A reload that
        changes or removes the rate limit meanwhile applies at once."""
        route = job.route
        started = time.monotonic()
        counted = False
        while (bucket := self._buckets.get(route)) is not None:
            now = time.monotonic()
            wait = bucket.reserve(records, now)
            if wait <= 0:
                break
            if not counted:
                self._metrics.rate_limited.labels(route).inc(records)
                counted = True
            changed = self._routes_changed
            timer = asyncio.ensure_future(asyncio.sleep(wait))
            try:
                await job.lease.unless_ended(_first(timer, changed.wait()))
            finally:
                timer.cancel()
            if timer.done() and not timer.cancelled():
                break  # the tokens are due: go
            bucket.refund(records, time.monotonic())  # revoked, or the limit changed: look again
            if job.stale:
                break
        if counted:
            self._metrics.rate_limit_wait.labels(route).inc(time.monotonic() - started)


async def _first(timer: asyncio.Future[None], other: Coroutine[Any, Any, Any]) -> None:
    """Return when ``timer`` is done or ``other`` returns."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
