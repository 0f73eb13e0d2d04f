"""The routes in force: the configuration and its compiled router, swapped whole by a reload
(between two fetches, so every record is planned by one set of routes)."""

from __future__ import annotations

from ..config import BridgeConfig
from ..core.routing import Router
from ..operate.metrics import Metrics


def prepare_metrics(metrics: Metrics, config: BridgeConfig) -> None:
    """Every route's series at 0 (a reload's new routes too; a removed route's stay)."""
    metrics.prepare((r.name, r.topics) for r in config.routes)
    metrics.prepare_replies(r.name for r in config.routes if r.reply_topic)
    metrics.prepare_batches(r.name for r in config.routes if r.batch)
    for route in config.routes:
        metrics.past_dedup_window.labels(route.name)
        if route.validate_input:
            metrics.inputs_refused.labels(route.name)


class RoutesInForce:
    """The one owner of the running configuration; every route's series exist from the start."""

    def __init__(self, config: BridgeConfig, metrics: Metrics) -> None:
        self._metrics = metrics
        self.use(config)

    def use(self, config: BridgeConfig) -> None:
        """From now on every record is planned by ``config``'s routes."""
        self.config = config
        self.router = Router(config)
        self.max_ages = {
            r.name: (r.max_record_age.total_seconds(), r.on_record_too_old == "block")
            for r in config.routes
            if r.max_record_age is not None
        }
        """Route -> (``max_record_age`` in seconds, whether a record too old blocks)."""
        prepare_metrics(self._metrics, config)

    def __call__(self) -> BridgeConfig:
        return self.config
