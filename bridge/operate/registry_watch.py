"""The running routes against what Restate has registered, read at start, on every reload and
every ``[restate] admin_check_interval``.

A route that does not fit (its service not deployed yet, the wrong kind, a handler missing or
private) would have every record refused by the ingress and, after ``unknown_target_grace``,
dead-lettered. Instead its invocations wait, as for an operator's pause, until a deployment makes
it fit; ``/readyz``, the status page, ``restate_bridge_route_unfit{route}`` and the log say so.
While the admin API cannot be read the last verdict stands (nothing new is held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from ..config import RouteConfig
from ..core.deployments import DeployedService, dedup_window, route_problems
from ..core.inputs import BadInputSchema, InputCheck, checkable
from ..deliver.ports import Pauses
from .metrics import Metrics

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[Mapping[str, DeployedService]]]
NOT_READ = "not read yet"


class RegistryWatch:
    """Which routes do not fit Restate's registry; implements delivery's ``Pauses`` together
    with the operator's controls (see :class:`Waits`)."""

    def __init__(
        self,
        fetch: Fetch,
        routes: Callable[[], Sequence[RouteConfig]],
        metrics: Metrics,
        *,
        interval: float,
        admin_url: str,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._fetch = fetch
        self._routes = routes
        self._metrics = metrics
        self._interval = interval
        self.admin_url = admin_url
        self.changed = changed
        """Called when the set of unfit routes changed: waiting jobs look again."""
        self._services: Mapping[str, DeployedService] | None = None
        self._checked: Sequence[RouteConfig] | None = None
        self._unfit: dict[str, list[str]] = {}
        self._windows: dict[str, float] = {}
        self._inputs: dict[str, InputCheck] = {}
        self._compiled: dict[bytes, InputCheck | str] = {}
        """Compiled input schemas by their JSON (or why one cannot be used): compiled once."""
        self.reason: str | None = NOT_READ
        """Why the admin API could not be read last time; ``None`` when it was."""
        self._wake = asyncio.Event()

    @property
    def unfit(self) -> Mapping[str, list[str]]:
        """Route name -> why it does not fit; judged again whenever the routes changed."""
        routes = self._routes()
        if routes is not self._checked:
            self._judge(routes)
        return self._unfit

    def is_unfit(self, route: str) -> bool:
        return route in self.unfit

    def input_check(self, route: str) -> InputCheck | None:
        """The input schema of a ``validate_input`` route's handler, compiled; ``None`` when
        there is nothing to check (not read yet, no schema published, or an unusable one)."""
        if self._routes() is not self._checked:
            self._judge(self._routes())
        return self._inputs.get(route)

    def dedup_window(self, route: str) -> float | None:
        """Seconds Restate remembers the idempotency keys of ``route``'s target; ``None``:
        unknown (not read yet, or the target is not registered)."""
        if self._routes() is not self._checked:
            self._judge(self._routes())
        return self._windows.get(route)

    def routes_changed(self) -> None:
        """A reload: judge the new routes now (against the last answer) and read again soon."""
        self._judge(self._routes())
        self._wake.set()

    async def refresh(self) -> None:
        """Read the registry once and judge the routes against it."""
        try:
            services = await self._fetch()
        except Exception as exc:  # any failure: keep the last verdict, say why
            if self.reason is None or self.reason == NOT_READ:  # say it once per outage
                log.warning("cannot read Restate's registry: %s; the routes stay as judged", exc)
            self.reason = str(exc) or type(exc).__name__
            self._metrics.restate_admin_up.set(0)
            return
        if self.reason is not None and self.reason != NOT_READ:
            log.info("Restate's registry is readable again")
        self.reason = None
        self._metrics.restate_admin_up.set(1)
        self._services = services
        self._judge(self._routes())

    async def watch_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # woken by a reload, or the interval
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.refresh()

    def view(self) -> dict[str, Any]:
        """The ``restate_registry`` object of ``/status.json``."""
        return {
            "admin_url": self.admin_url,
            "up": self.reason is None,
            "reason": self.reason,
            "unfit_routes": {name: list(problems) for name, problems in self.unfit.items()},
        }

    def _judge(self, routes: Sequence[RouteConfig]) -> None:
        self._checked = routes
        if self._services is None:  # never read: nothing is known, nothing is held
            return
        self._inputs = self._input_checks(routes, self._services)
        windows = {r.name: dedup_window(r.service, r.handler, self._services) for r in routes}
        self._windows = {name: w.total_seconds() for name, w in windows.items() if w is not None}
        unfit = {
            r.name: problems
            for r in routes
            if (problems := route_problems(r.name, r.target, r.service, r.handler, self._services))
        }
        before = self._unfit
        for name in before.keys() - unfit.keys():
            log.info("route %r fits Restate's registry now: its invocations go", name)
        for name in unfit.keys() - before.keys():
            log.warning(
                "%s: the route does not fit Restate's registry; its invocations wait until it does",
                "; ".join(unfit[name]),
            )
        for r in routes:
            self._metrics.route_unfit.labels(r.name).set(1 if r.name in unfit else 0)
        for name in before.keys() - {r.name for r in routes}:
            self._metrics.route_unfit.labels(name).set(0)  # removed by a reload
        self._unfit = unfit
        if unfit.keys() != before.keys():
            self.changed()

    def _input_checks(
        self, routes: Sequence[RouteConfig], services: Mapping[str, DeployedService]
    ) -> dict[str, InputCheck]:
        checks: dict[str, InputCheck] = {}
        for route in routes:
            found = services.get(route.service)
            handler = found.handlers.get(route.handler) if found is not None else None
            if not route.validate_input or handler is None or not checkable(handler.input_schema):
                continue
            source = orjson.dumps(handler.input_schema, option=orjson.OPT_SORT_KEYS)
            check = self._compiled.get(source)
            if check is None:
                try:
                    check = InputCheck(handler.input_schema)
                except BadInputSchema as exc:
                    check = str(exc)
                    log.warning(
                        "route %r: %s/%s's input schema is unusable, inputs go unchecked: %s",
                        route.name, route.service, route.handler, exc,
                    )  # fmt: skip
                if len(self._compiled) > 256:  # schemas that keep changing: start afresh
                    self._compiled.clear()
                self._compiled[source] = check
            if isinstance(check, InputCheck):
                checks[route.name] = check
        return checks


class Waits:
    """Delivery's ``Pauses``: the operator's pauses, and the routes that do not fit Restate's
    registry (when it is watched)."""

    def __init__(self, controls: Pauses, registry: RegistryWatch | None) -> None:
        self._controls = controls
        self._registry = registry

    @property
    def any_paused(self) -> bool:
        registry = self._registry
        return self._controls.any_paused or (registry is not None and bool(registry.unfit))

    def is_paused(self, route: str, topic: str) -> bool:
        if self._controls.is_paused(route, topic):
            return True
        return self._registry is not None and self._registry.is_unfit(route)
