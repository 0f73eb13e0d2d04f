"""The status page's data: a JSON snapshot of the metrics, the routes and the last dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import BridgeConfig
from ..core.controls import Blocked
from ..core.history import History
from ..core.offsets import TopicPartition
from ..sinks.deadletter import DeadLetter
from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetterNote:
    at: float
    topic: str
    partition: int
    offset: int
    route: str
    reason: str


class RecentDeadLetters:
    """The last ``size`` dead letters, newest first, for the status page."""

    def __init__(self, size: int = 20) -> None:
        self._items: deque[DeadLetterNote] = deque(maxlen=size)

    def add(self, letter: DeadLetter) -> None:
        rec = letter.record
        note = DeadLetterNote(
            time.time(), rec.topic, rec.partition, rec.offset, letter.route, letter.reason
        )
        self._items.appendleft(note)

    def __iter__(self) -> Any:
        return iter(self._items)


def _samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in metrics.registry.collect():
        if not family.name.startswith("restate_bridge_"):
            continue
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _partition_row(topic: str, partition: str) -> dict[str, Any]:
    return {
        "topic": topic,
        "partition": int(partition),
        "lag": None,
        "committed_lag": None,
        "oldest_unfinished_age": None,
        "committed": None,
        "blocked": 0.0,
        "blocked_at": None,
        "blocked_route": None,
        "blocked_reason": None,
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]

ROUTE_COLUMNS = {
    # column: (metric, labels it must have)
    "accepted": ("restate_bridge_messages_total", {"outcome": "accepted"}),
    "duplicate": ("restate_bridge_messages_total", {"outcome": "duplicate"}),
    "dead_lettered": ("restate_bridge_messages_total", {"outcome": "dead_lettered"}),
    "in_flight": ("restate_bridge_in_flight", {}),
    "retries": ("restate_bridge_retries_total", {}),
    "errors": ("restate_bridge_ingress_errors_total", {}),
    "latency_sum": ("restate_bridge_ingress_latency_seconds_sum", {}),
    "latency_count": ("restate_bridge_ingress_latency_seconds_count", {}),
}
PARTITION_COLUMNS = {
    "restate_bridge_consumer_lag": "lag",
    "restate_bridge_committed_lag": "committed_lag",
    "restate_bridge_oldest_unfinished_age_seconds": "oldest_unfinished_age",
    "restate_bridge_committed_offset": "committed",
    "restate_bridge_partition_blocked": "blocked",
}


def _by_route(samples: Samples, name: str, match: Mapping[str, str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in samples.get(name, []):
        if all(labels.get(k) == v for k, v in match.items()):
            route = labels.get("route", "")
            totals[route] = totals.get(route, 0.0) + value
    return totals


def _routes(config: BridgeConfig, samples: Samples) -> list[dict[str, Any]]:
    # each column aggregated once, then looked up per route
    columns = {c: _by_route(samples, name, match) for c, (name, match) in ROUTE_COLUMNS.items()}
    return [
        {
            "name": r.name,
            "topics": list(r.topics) or [r.topic_pattern.pattern if r.topic_pattern else ""],
            "target": f"{r.target} {r.service}/{r.handler}",
            **{column: totals.get(r.name, 0.0) for column, totals in columns.items()},
        }
        for r in config.routes
    ]


def _partitions(
    samples: Samples, blocked: Mapping[TopicPartition, Blocked]
) -> list[dict[str, Any]]:
    partitions: dict[tuple[str, str], dict[str, Any]] = {}
    for name, field in PARTITION_COLUMNS.items():
        for labels, value in samples.get(name, []):
            key = (labels["topic"], labels["partition"])
            row = partitions.setdefault(key, _partition_row(*key))
            row[field] = value
    for tp, why in blocked.items():
        owned = partitions.get((tp.topic, str(tp.partition)))
        if owned is not None and owned.get("blocked"):  # owned now: its gauge is there
            owned["blocked_at"] = why.offset
            owned["blocked_route"] = why.route
            owned["blocked_reason"] = why.reason
    return sorted(partitions.values(), key=lambda p: (p["topic"], p["partition"]))


def _total(samples: Samples, name: str, match: Mapping[str, str] | None = None) -> float:
    return sum(
        v
        for labels, v in samples.get(name, [])
        if all(labels.get(k) == w for k, w in (match or {}).items())
    )


class HistorySampler:
    """Samples the counters ``/metrics`` exports into a :class:`History` every ``step`` s:
    records accepted by the ingress, ingress errors, dead letters, committed lag summed."""

    def __init__(self, metrics: Metrics, history: History | None = None) -> None:
        self.metrics = metrics
        self.history = history if history is not None else History()  # an empty one is falsy

    def sample(self, at: float | None = None) -> None:
        samples = _samples(self.metrics)
        messages = "restate_bridge_messages_total"
        lags = samples.get("restate_bridge_committed_lag")
        self.history.add(
            time.time() if at is None else at,
            _total(samples, messages, {"outcome": "accepted"}),
            _total(samples, "restate_bridge_ingress_errors_total"),
            _total(samples, messages, {"outcome": "dead_lettered"}),
            sum(v for _, v in lags) if lags else None,
        )

    async def run(self) -> None:
        """Samples until cancelled. A sample that fails is logged and skipped: the charts are not
        worth stopping for, nor worth ending the sampling over (a gap shows instead)."""
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("status page history: a sample failed; the charts skip it")
            await asyncio.sleep(self.history.step)


def snapshot(
    config: BridgeConfig,
    metrics: Metrics,
    dead_letters: RecentDeadLetters,
    readiness: tuple[bool, str],
    blocked: Mapping[TopicPartition, Blocked] | None = None,
    controls: Mapping[str, Any] | None = None,
    *,
    ingress_nodes: list[dict[str, Any]] | None = None,
    restate_registry: Mapping[str, Any] | None = None,
    history: History | None = None,
) -> dict[str, Any]:
    """Everything the status page shows; numbers are the ones ``/metrics`` exports, plus why a
    blocked partition is blocked, the operator's ``controls`` (the last reload, ...), each
    ingress node's state (``node``, ``up``, ``reason``, ``in_flight``), with an admin URL
    Restate's registry as the routes were judged against it (``restate_registry``), and the last
    15 minutes of the counters (``history``)."""
    samples = _samples(metrics)
    unrouted = sum(
        v
        for labels, v in samples.get("restate_bridge_messages_total", [])
        if labels.get("outcome") == "unrouted"
    )
    ready, detail = readiness
    up = samples.get("restate_bridge_ingress_up", [({}, 0.0)])[0][1]
    return {
        "time": time.time(),
        "ready": ready,
        "detail": detail,
        "ingress_up": up,
        "ingress_nodes": ingress_nodes or [],
        "pending_records": samples.get("restate_bridge_pending_records", [({}, 0.0)])[0][1],
        "unrouted": unrouted,
        "routes": _routes(config, samples),
        "partitions": _partitions(samples, blocked or {}),
        "dead_letters": [asdict(d) for d in dead_letters],
        "controls": dict(controls or {}),
        "restate_registry": None if restate_registry is None else dict(restate_registry),
        "history": (history if history is not None else History()).as_json(),
    }
