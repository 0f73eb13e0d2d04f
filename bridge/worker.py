"""One bridge worker's lifecycle: start, consume, reload, and the staged shutdown.

Data flows one way: record -> decode -> route -> lane -> ingress -> accept -> offset -> commit.
The parts (:mod:`bridge.runtime`) do the work; :class:`Bridge` only starts them in order, runs
the consume loop, swaps in reloaded routes between two fetches, and stops:

    start   status server -> ingress clients (+ health probe, token file) -> attach clients
            (reply routes) -> Kafka security check -> producer -> delivery -> consumer
    run     fetch, plan, submit; commit and update the per-partition gauges every commit_interval
    stop    stop fetching -> wait for in-flight sends (up to drain_timeout) -> commit
            -> cancel what is left -> close in reverse start order

Reload (:mod:`bridge.operate.reload`): new routes are swapped in by the consume loop between two
fetches, so every record is planned by one set of routes and invocations already planned go on
as planned. When the topics change, the loop settles (stop fetching, drain, commit) before it
subscribes anew: aiokafka commits only partitions of its current subscription, so the
revocation that follows could no longer commit what finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .config import BridgeConfig, load_config
from .config.diff import ConfigDiff
from .consume.book import PartitionBook
from .consume.kafka import KafkaRefused
from .consume.oauth import make_login
from .consume.port import ConsumerFactory, KafkaConsumer, LazyProducer, unless_stopped
from .consume.routes import RoutesInForce
from .core.controls import Blocked, Controls
from .core.nodes import node_label
from .core.offsets import TopicPartition
from .deliver.health import IngressHealth
from .operate.metrics import Metrics
from .operate.operator import Operator
from .operate.registry_watch import RegistryWatch
from .operate.reload import CannotApply, Load, NotRunning, Reloader, unrunnable
from .operate.restate_check import fetch_services
from .operate.server import StatusServer
from .operate.status import HistorySampler, RecentDeadLetters, snapshot
from .runtime import Parts, Runtime, open_runtime
from .schemas.setup import open_decoder
from .sinks.parking import Parking

log = logging.getLogger(__name__)


def _load_again(running: BridgeConfig) -> BridgeConfig:
    """The default reload: the same file, with this process's environment."""
    return load_config(running.path, os.environ, running=running)


@dataclass
class _Swap:
    """New routes waiting for the consume loop, and the reload waiting for them to run."""

    config: BridgeConfig
    changes: ConfigDiff
    done: asyncio.Future[None]


def _registry_watch(
    config: BridgeConfig, routes: RoutesInForce, metrics: Metrics, changed: Callable[[], None]
) -> RegistryWatch | None:
    admin_url = config.restate.admin_url
    if admin_url is None:
        return None
    return RegistryWatch(
        functools.partial(fetch_services, config, admin_url),
        lambda: routes.config.routes,
        metrics,
        interval=config.restate.admin_check_interval.total_seconds(),
        admin_url=node_label(admin_url),
        changed=changed,
    )


class Bridge:
    """One bridge worker. ``await bridge.run(stop)`` returns after a graceful shutdown.

    ``consumer_factory`` makes the Kafka consumer (aiokafka's by default) and ``producer``
    the producer for dead letters, replies and skipped records (started on first use)."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        metrics: Metrics | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Load = _load_again,
        consumer_factory: ConsumerFactory | None = None,
        producer: LazyProducer | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.routes = RoutesInForce(config, self.metrics)
        self.token = token or config.restate.token
        self.reloader = Reloader(
            running=lambda: self.config, load=load, apply=self.reload_routes, metrics=self.metrics
        )
        self.health = IngressHealth(self.metrics, config.restate.ingress_urls)
        self.dead_letters = RecentDeadLetters()
        self.sampler = HistorySampler(self.metrics)
        """The status page's last 15 minutes, sampled while the bridge runs."""
        self.controls = Controls()
        """The operator's pauses, skip orders and releases (the admin API changes them)."""
        self.book = PartitionBook(self.metrics, self.dead_letters, clock)
        self.registry = _registry_watch(config, self.routes, self.metrics, self._pauses_changed)
        """Restate's registry, when ``[restate] admin_url`` is set: routes that do not fit wait."""
        self.login = make_login(config.kafka, self.metrics)  # OAUTHBEARER: every connection's
        self.producer = producer or LazyProducer(config, login=self.login)
        parking = Parking(self.producer.get, self.producer.cluster_topics)
        self.operator = Operator(
            controls=self.controls,
            book=self.book,
            routes=self.routes,
            parking=parking,
            metrics=self.metrics,
            pauses_changed=self._pauses_changed,
            reloader=self.reloader,
        )
        self.status = StatusServer(
            self.metrics,
            self.readiness,
            *config.metrics.host_port,
            token=config.metrics.token,
            status=self._status,
            reload=self.admin_reload,
            admin=self.operator,
        )
        self._parts = Parts(
            self.routes, self.metrics, self.health, self.book, self.controls, self.status,
            self.producer, parking, self.token,
            consumer_factory or functools.partial(KafkaConsumer, login=self.login),
            clock, self.registry, self.login,
        )  # fmt: skip
        self._runtime: Runtime | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._kafka_refused: KafkaRefused | None = None
        self._reload_wanted = asyncio.Event()
        self._swap: _Swap | None = None
        self._consuming = False
        """True while the consume loop runs: only then can routes be swapped."""

    @property
    def config(self) -> BridgeConfig:
        return self.routes.config

    @property
    def blocked(self) -> dict[TopicPartition, Blocked]:
        """Partitions stopped at a record that can never succeed, and why."""
        return self.book.all_blocked()

    def controls_view(self) -> dict[str, Any]:
        """The ``controls`` object of ``/status.json``."""
        return self.operator.controls_view()

    def readiness(self) -> tuple[bool, str]:
        if self._kafka_refused is not None:
            return False, str(self._kafka_refused)
        if self.login is not None and not self.login.up:
            return False, f"no Kafka token: {self.login.reason}"
        runtime = self._runtime
        if runtime is None or not runtime.kafka.joined:
            return False, "not yet in the Kafka consumer group"
        if not self.health.up:
            return False, f"Restate ingress unreachable: {self.health.reason}"
        if missing := runtime.delivery.missing_reply_topics:
            return False, f"reply topic {', '.join(sorted(missing))} does not exist (retrying)"
        decoder = runtime.kafka.intake.decoder
        if decoder is not None and not decoder.up:
            return False, f"schema registry unreachable: {decoder.reason}"
        if self.registry is not None and (unfit := self.registry.unfit):
            said = "; ".join(p for problems in unfit.values() for p in problems)
            return False, f"{said}; its invocations wait until Restate's registry fits"
        if self.health.down_nodes:  # still ready: the other nodes take the sends
            return True, f"consuming; ingress {self.health.reason}"
        return True, "consuming"

    def _status(self) -> dict[str, Any]:
        return snapshot(
            self.config,
            self.metrics,
            self.dead_letters,
            self.readiness(),
            self.blocked,
            controls=self.controls_view(),
            ingress_nodes=self.health.nodes(),
            restate_registry=None if self.registry is None else self.registry.view(),
            history=self.sampler.history,
        )

    @property
    def _bearer(self) -> Callable[[], Awaitable[str]] | None:
        """The Kafka login's token, for a schema registry with ``kafka_oauth_token``."""
        return None if self.login is None else self.login.token

    def _pauses_changed(self) -> None:
        if self._runtime is not None:
            self._runtime.delivery.pauses_changed()

    def _refused(self, exc: KafkaRefused) -> None:
        self._kafka_refused = exc

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start, consume until ``stop`` is set, then drain, commit and close (module docstring).

        ``stop`` set while starting (a slow broker, a group join held back) ends the start at
        once: nothing was fetched yet, so there is nothing to drain.
        """
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            runtime = await unless_stopped(open_runtime(self._parts, stack, self._refused), stop)
            if runtime is None:
                log.info("stopped while starting")
                return
            self._runtime = runtime
            self._consuming = True
            reloads = asyncio.create_task(self._reload_when_asked())
            sampling = asyncio.create_task(self.sampler.run())
            try:
                await runtime.kafka.run(stop, functools.partial(self._between_fetches, runtime))
            finally:
                self._runtime_stops(runtime)
                for task in (reloads, sampling):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self._shutdown(runtime)

    def _runtime_stops(self, runtime: Runtime) -> None:
        if self._swap is not None:  # asked for while the loop ended: never applied
            self._swap.done.set_exception(NotRunning("the bridge is stopping"))
            self._swap = None
        self._consuming = False

    async def _shutdown(self, runtime: Runtime) -> None:
        """The staged drain: stop fetching, wait for in-flight sends (up to ``drain_timeout``),
        commit, cancel what is left."""
        log.info("stopping: draining %d unfinished records", self.book.tracker.in_progress)
        if not await runtime.kafka.settle():
            log.warning("drain timed out; committing what finished, the rest is redelivered")
        elif waiting := self.book.tracker.in_progress:
            log.info("%d records wait for an operator's pause; they are read again", waiting)
        await runtime.delivery.aclose()

    # -- reload ----------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload the routing file soon (the SIGHUP handler: it only sets a flag; several
        signals during one reload make one more reload after it)."""
        self._reload_wanted.set()

    async def _reload_when_asked(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reloader.reload("SIGHUP")

    async def admin_reload(self) -> tuple[int, dict[str, Any]]:
        """``POST /admin/reload``: refused with 409 while another reload runs."""
        report = await self.reloader.reload("admin", wait=False)
        return report.answer()

    async def reload_routes(self, config: BridgeConfig, changes: ConfigDiff) -> None:
        """Run ``config``'s routes from the consume loop's next turn; returns once they run.

        Raises :class:`CannotApply` (routes this process cannot add without a restart) or
        :class:`NotRunning` before anything changed.
        """
        runtime = self._runtime
        if runtime is None or not self._consuming:
            raise NotRunning("the bridge is starting or stopping; reload when it consumes")
        problems = unrunnable(config, replies=runtime.replies)
        if problems:
            raise CannotApply(problems)
        swap = self._swap = _Swap(config, changes, asyncio.get_running_loop().create_future())
        await swap.done

    async def _between_fetches(self, runtime: Runtime) -> None:
        """Run the new routes of a reload (nothing is fetched meanwhile)."""
        swap, self._swap = self._swap, None
        if swap is None:
            return
        try:
            await self._use_routes(runtime, swap.config, swap.changes)
        except asyncio.CancelledError:  # a forced exit: the reload waiting must not hang
            swap.done.set_exception(NotRunning("the bridge is stopping"))
            raise
        except Exception as exc:  # the reload reports it; the loop goes on
            swap.done.set_exception(exc)
        else:
            swap.done.set_result(None)

    async def _use_routes(
        self, runtime: Runtime, config: BridgeConfig, changes: ConfigDiff
    ) -> None:
        stack = self._stack
        if stack is None:  # run() sets it before the loop starts
            raise NotRunning("the bridge is not running")
        await runtime.kafka.use_routes(
            config,
            changes,
            lambda c: open_decoder(c, self.metrics, stack, self._bearer),
        )
        if self.registry is not None:
            self.registry.routes_changed()
