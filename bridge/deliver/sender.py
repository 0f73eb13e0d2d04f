"""Sending one invocation until the ingress accepts it or a decision gives up.

Each attempt is one ``/send`` within the job's slots (its route's, then a global one:
:class:`bridge.deliver.limits.Limits`) to the node that
:class:`bridge.deliver.health.IngressHealth` picks once the slots are held. What happens after a
failure is decided by :func:`bridge.deliver.decisions.after_send_failure`; this module applies
it: count it, mark the node down, log, sleep (through :func:`bridge.deliver.retry.persist`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.routing import Invocation
from ..ingress import NO_INPUT, Client, ResponseError, SendReceipt
from ..operate.metrics import Metrics
from .decisions import Attempts, GiveUp, after_send_failure
from .health import IngressHealth
from .jobs import Job
from .limits import Limits
from .retry import Again, Done, persist

if TYPE_CHECKING:
    from ..tracing.spans import SendSpan

log = logging.getLogger(__name__)


class _NotNow(Exception):
    """The job may not send now (paused while waiting for a slot, or its lease ended)."""


class _Tried:
    """Where the last attempt went (the node a failure marks down)."""

    __slots__ = ("node",)

    def __init__(self) -> None:
        self.node = 0


def refused(error: Exception) -> bool:
    """Whether ``error`` says for sure the ingress did not take the request: a 4xx answer. After
    anything else (a timeout, a broken connection, a 5xx a proxy sent) it may have."""
    status = error.status if isinstance(error, ResponseError) else None
    return status is not None and 400 <= status < 500


class Sender:
    """Sends invocations through the ingress nodes' clients (one per node, in ``health``'s
    order), within :class:`Limits`."""

    def __init__(
        self,
        clients: Sequence[Client],
        health: IngressHealth,
        limits: Limits,
        metrics: Metrics,
        timeout: float,
    ) -> None:
        self._clients = tuple(clients)
        self._health = health
        self._limits = limits
        self._metrics = metrics
        self._timeout = timeout

    async def deliver(self, job: Job, inv: Invocation) -> SendReceipt | GiveUp | None:
        """Send until the ingress accepts (the receipt) or a decision gives up (recorded in
        ``job.gave_up`` too); ``None`` when the job's lease ended meanwhile."""
        route = inv.route
        tried = _Tried()
        # the first attempt outside the retry loop: most sends succeed at once
        started = time.perf_counter()
        try:
            node, since, receipt = await self._send(job, inv, 0, tried)
        except Exception as exc:  # every failure goes to the retry loop's judge
            first: Exception | None = exc
        else:
            self._metrics.latency_histogram(route).observe(time.perf_counter() - started)
            self._health.answered(node, since)
            return receipt
        policy = self._limits.policy_of(route)
        attempts = Attempts()

        def judge(error: Exception, _: int) -> Again | GiveUp:
            nonlocal attempts
            if isinstance(error, _NotNow):
                return Again(0.0, counts=False)
            if not refused(error):
                job.maybe_accepted = True
            decision = after_send_failure(error, attempts, time.monotonic(), policy)
            self._metrics.ingress_errors.labels(route, decision.label).inc()
            if isinstance(decision, GiveUp):
                job.gave_up = decision
                job.explain(decision, error)
                return decision
            if decision.ingress_down:  # this node: the retry goes to another one that is up
                self._health.mark_down(f"{decision.label}: {error}", tried.node)
            if decision.grace_started:
                log.warning(
                    "%s: route %s: %s; retrying for %.0fs (unknown_target_grace)",
                    job.coordinates,
                    route,
                    error,
                    policy.unknown_target_grace,
                )
            self._metrics.retries.labels(route).inc()
            attempts = decision.attempts
            return Again(decision.delay)

        async def attempt(failed: int) -> SendReceipt:
            nonlocal first
            if first is not None:  # judge the first attempt's failure
                error, first = first, None
                raise error
            started = time.perf_counter()
            node, since, receipt = await self._send(job, inv, attempts.count, tried)
            self._metrics.latency_histogram(route).observe(time.perf_counter() - started)
            self._health.answered(node, since)
            return receipt

        outcome = await persist(job.lease, attempt, judge)
        return outcome.value if isinstance(outcome, Done) else outcome

    async def _send(
        self, job: Job, inv: Invocation, attempt: int, tried: _Tried
    ) -> tuple[int, int, SendReceipt]:
        """One ``/send``: the node, what :meth:`IngressHealth.started` said, and the receipt.
        Raises what the send raised (``tried`` says which node it went to) or :class:`_NotNow`.
        ``attempt`` counts the failed sends before this one (for its span)."""
        limits = self._limits
        if limits.paused(job) and not await limits.unpaused(job):
            raise _NotNow("lease ended")
        # the route's slot, then a global one: a slow route at its cap waits for its own slots
        # without holding global slots others need
        limited = limits.route_slots(job.route)
        async with limited[1] if limited else contextlib.nullcontext(), limits.global_slots:
            if job.stale or limits.paused(job):
                # paused while it waited for the slots: nothing of a paused route starts after
                # the pause was answered; the slots go back while it waits for the resume
                raise _NotNow("paused or revoked while waiting for a slot")
            node = tried.node = self._health.pick()
            since = self._health.started(node)
            gauge = self._metrics.in_flight_gauge(inv.route)
            gauge.inc()
            send_span: SendSpan | None = None
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
            except BaseException as exc:  # cancelled too: the span ends, the job's owner decides
                if send_span is not None:
                    send_span.failed(exc)
                raise
            finally:
                gauge.dec()
                self._health.finished(node)
        if send_span is not None:
            send_span.answered(202)
        return node, since, receipt
