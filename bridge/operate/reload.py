"""Reloading the routing file at run time (SIGHUP or ``POST /admin/reload``), one at a time.

A reload reads and checks the file with the loader ``run`` and ``check`` use (environment and
secrets included), off the event loop. A file with problems changes nothing: each problem is
logged at ERROR as ``PATH:LINE: message`` and the bridge goes on with the routes it has. A valid
file is compared with the running config (:func:`bridge.config.diff.diff`): its ``[[routes]]``
are handed to the bridge, which swaps them between two fetches (:meth:`Bridge.reload_routes`);
every other table keeps its running value, and each one the file changed is logged once as
``[TABLE] changed (KEYS): restart to apply``.

One reload runs at a time: a signal that arrives during one waits for it (signals are coalesced
by the caller), a ``POST /admin/reload`` is refused with 409.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..config import BridgeConfig, ConfigError
from ..config.diff import ConfigDiff, diff
from .metrics import Metrics

log = logging.getLogger(__name__)

Outcome = Literal["applied", "invalid", "failed", "busy", "unavailable"]
"""``applied``, ``invalid`` (problems in the file) and ``failed`` are counted in
``restate_bridge_reloads_total``; ``busy`` (another reload runs) and ``unavailable`` (the bridge
is starting or stopping) are refusals that read nothing."""

HTTP_STATUS: dict[Outcome, int] = {
    "applied": 200,
    "invalid": 400,
    "busy": 409,
    "unavailable": 503,
    "failed": 500,
}


class CannotApply(Exception):
    """A valid file whose routes this process cannot run without a restart."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class NotRunning(Exception):
    """The bridge is starting or stopping: there is no consume loop to swap routes in."""


@dataclass(frozen=True)
class ReloadReport:
    """What one reload did; the last one counted is shown under ``/status.json`` controls."""

    time: float
    source: str
    """``SIGHUP`` or ``admin``."""
    outcome: Outcome
    changes: ConfigDiff | None = None
    problems: tuple[str, ...] = ()
    detail: str = ""

    @property
    def restart_required(self) -> list[str]:
        return [] if self.changes is None else [s for s, _ in self.changes.restart_required]

    def as_json(self) -> dict[str, Any]:
        """``last_reload`` under ``/status.json`` ``controls``."""
        return {
            "time": self.time,
            "source": self.source,
            "outcome": self.outcome,
            "detail": self.detail,
            "changes": None if self.changes is None else self.changes.as_json(),
            "restart_required": self.restart_required,
            "problems": list(self.problems),
        }

    def answer(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of ``POST /admin/reload``."""
        status = HTTP_STATUS[self.outcome]
        if self.outcome == "applied":
            assert self.changes is not None
            return status, {
                "status": "ok",
                "changes": self.changes.as_json(),
                "restart_required": self.restart_required,
            }
        body: dict[str, Any] = {"status": "error", "detail": self.detail}
        if self.problems:
            body["problems"] = list(self.problems)
        return status, body


def unrunnable(config: BridgeConfig, *, replies: bool) -> list[str]:
    """``PATH:LINE`` problems of routes this process cannot add without a restart: reply routes
    need a producer and a pool of attach connections that are made at start, only when a reply
    route exists then."""
    if replies:
        return []
    return [
        f"{config.path}:{r.line}: route {r.name!r} has a reply_topic, and this process started "
        "without reply routes (their producer and connections are made at start): restart to "
        "add the first one"
        for r in config.routes
        if r.reply_topic is not None
    ]


Load = Callable[[BridgeConfig], BridgeConfig]
"""Reads the routing file again, given the running config; raises :class:`ConfigError`."""
Apply = Callable[[BridgeConfig, ConfigDiff], Awaitable[None]]
"""Runs ``config`` (the running tables, the new routes); raises :class:`CannotApply` or
:class:`NotRunning` before it changes anything."""


class Reloader:
    """Serialises reloads, and logs, counts and remembers each one."""

    def __init__(
        self,
        *,
        running: Callable[[], BridgeConfig],
        load: Load,
        apply: Apply,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._running = running
        self._load = load
        self._apply = apply
        self._metrics = metrics
        self._clock = clock
        self._lock = asyncio.Lock()
        self.last: ReloadReport | None = None
        """The last reload that read the file (refusals are not kept)."""
        metrics.config_reload_timestamp.set(clock())

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def reload(self, source: str, *, wait: bool = True) -> ReloadReport:
        """Reload once; ``wait`` false refuses (``busy``) while another reload runs."""
        if not wait and self._lock.locked():
            return self._refused(source, "busy", "a reload is already running; try again later")
        async with self._lock:
            report = await self._reload(source)
        if report.outcome in ("applied", "invalid", "failed"):
            self._metrics.reloads.labels(report.outcome).inc()
            self.last = report
        return report

    def _refused(self, source: str, outcome: Outcome, detail: str) -> ReloadReport:
        log.warning("reload (%s) refused: %s", source, detail)
        return ReloadReport(self._clock(), source, outcome, detail=detail)

    async def _reload(self, source: str) -> ReloadReport:
        running = self._running()
        log.info("reloading %s (%s)", running.path, source)
        try:
            new = await asyncio.to_thread(self._load, running)
            changes = diff(running, new)
            await self._apply(dataclasses.replace(running, routes=new.routes), changes)
        except ConfigError as exc:
            return self._invalid(source, running, exc.problems)
        except CannotApply as exc:
            return self._invalid(source, running, exc.problems)
        except NotRunning as exc:
            return self._refused(source, "unavailable", str(exc))
        except Exception as exc:  # a bug must not end the process (or its SIGHUP handling)
            log.exception("reload of %s failed; still running on the previous routes", running.path)
            detail = f"reload failed: {type(exc).__name__}: {exc}"
            return ReloadReport(self._clock(), source, "failed", detail=detail)
        for section, keys in changes.restart_required:
            log.warning("reload: [%s] changed (%s): restart to apply", section, ", ".join(keys))
        for name in changes.retargeted:
            log.warning(
                "reload: route %s sends to another target or idempotency key from now on; a "
                "record read again after a crash or rebalance is not deduplicated against what "
                "the route sent before",
                name,
            )
        log.info(
            "reload of %s applied: routes added %s, removed %s, changed %s",
            new.path,
            list(changes.added),
            list(changes.removed),
            list(changes.changed_routes),
        )
        now = self._clock()
        self._metrics.config_reload_timestamp.set(now)
        return ReloadReport(now, source, "applied", changes, detail="applied")

    def _invalid(self, source: str, running: BridgeConfig, problems: list[str]) -> ReloadReport:
        for problem in problems:
            log.error("%s", problem)
        detail = (
            f"{running.path} has {len(problems)} problem(s); still running on the previous routes"
        )
        log.error("reload refused: %s", detail)
        now = self._clock()
        return ReloadReport(now, source, "invalid", problems=tuple(problems), detail=detail)
