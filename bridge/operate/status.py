"""The status page's data: a JSON snapshot of the metrics, the routes and the last dead letters."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import BridgeConfig
from ..core.controls import Blocked
from ..core.offsets import TopicPartition
from ..sinks.deadletter import DeadLetter
from .metrics import Metrics


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


def snapshot(
    config: BridgeConfig,
    metrics: Metrics,
    dead_letters: RecentDeadLetters,
    readiness: tuple[bool, str],
    blocked: Mapping[TopicPartition, Blocked] | None = None,
    controls: Mapping[str, Any] | None = None,
    *,
    ingress_nodes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the status page shows; numbers are the ones ``/metrics`` exports, plus why a
    blocked partition is blocked, the operator's ``controls`` (the last reload, ...) and each
    ingress node's state (``node``, ``up``, ``reason``, ``in_flight``)."""
    samples = _samples(metrics)

    def by_route(name: str, **match: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for labels, value in samples.get(name, []):
            if all(labels.get(k) == v for k, v in match.items()):
                route = labels.get("route", "")
                totals[route] = totals.get(route, 0.0) + value
        return totals

    # each column aggregated once, then looked up per route
    columns = {
        "accepted": by_route("restate_bridge_messages_total", outcome="accepted"),
        "duplicate": by_route("restate_bridge_messages_total", outcome="duplicate"),
        "dead_lettered": by_route("restate_bridge_messages_total", outcome="dead_lettered"),
        "in_flight": by_route("restate_bridge_in_flight"),
        "retries": by_route("restate_bridge_retries_total"),
        "errors": by_route("restate_bridge_ingress_errors_total"),
        "latency_sum": by_route("restate_bridge_ingress_latency_seconds_sum"),
        "latency_count": by_route("restate_bridge_ingress_latency_seconds_count"),
    }
    routes = [
        {
            "name": r.name,
            "topics": list(r.topics) or [r.topic_pattern.pattern if r.topic_pattern else ""],
            "target": f"{r.target} {r.service}/{r.handler}",
            **{column: totals.get(r.name, 0.0) for column, totals in columns.items()},
        }
        for r in config.routes
    ]

    partitions: dict[tuple[str, str], dict[str, Any]] = {}
    for name, field in (
        ("restate_bridge_consumer_lag", "lag"),
        ("restate_bridge_committed_lag", "committed_lag"),
        ("restate_bridge_oldest_unfinished_age_seconds", "oldest_unfinished_age"),
        ("restate_bridge_committed_offset", "committed"),
        ("restate_bridge_partition_blocked", "blocked"),
    ):
        for labels, value in samples.get(name, []):
            key = (labels["topic"], labels["partition"])
            row = partitions.setdefault(key, _partition_row(*key))
            row[field] = value
    for tp, why in (blocked or {}).items():
        owned = partitions.get((tp.topic, str(tp.partition)))
        if owned is not None and owned.get("blocked"):  # owned now: its gauge is there
            owned["blocked_at"] = why.offset
            owned["blocked_route"] = why.route
            owned["blocked_reason"] = why.reason
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
        "routes": routes,
        "partitions": sorted(partitions.values(), key=lambda p: (p["topic"], p["partition"])),
        "dead_letters": [asdict(d) for d in dead_letters],
        "controls": dict(controls or {}),
    }
