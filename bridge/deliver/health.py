"""Whether the Restate ingress is reachable, per node: set by sends, checked by a probe per node.

The ingress is up while at least one of its nodes is (``[restate] ingress_url`` may list several;
see :mod:`bridge.core.nodes`); fetching pauses while none is. Which node a send goes to is chosen
here
too, among the up ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..core.nodes import NodeChooser, describe_down, node_label
from ..ingress import Client, IngressError
from ..operate.metrics import Metrics

log = logging.getLogger(__name__)


class IngressHealth:
    """The ingress nodes' health; ``urls`` name them (credentials are never shown)."""

    def __init__(self, metrics: Metrics, urls: Sequence[str] = ("",)) -> None:
        self._metrics = metrics
        self.labels = tuple(node_label(u) if u else "" for u in urls)
        self._chooser = NodeChooser(len(self.labels))
        self._up = asyncio.Event()
        self._several = len(self.labels) > 1
        metrics.ingress_up.set(0)
        for label in self.labels:
            if label:
                metrics.ingress_node_up.labels(label).set(0)
                metrics.ingress_node_sends.labels(label)

    @property
    def up(self) -> bool:
        """At least one node answers."""
        return self._up.is_set()

    @property
    def reason(self) -> str:
        """Why the nodes that are down are (``node URL: reason; ...`` with several nodes)."""
        return describe_down(self.labels, self._chooser)

    @property
    def down_nodes(self) -> list[str]:
        """The labels of the nodes that are down."""
        return [self.labels[i] for i in self._chooser.down()]

    def mark_up(self, node: int = 0) -> None:
        """``node`` answered its probe (or a request made to it while it was down)."""
        if self._chooser.mark_up(node):
            self._node_up(node)

    def answered(self, node: int, since: int) -> None:
        """A send to ``node`` succeeded; ``since`` is what :meth:`started` returned for it."""
        if self._chooser.answered(node, since):
            self._node_up(node)

    def _node_up(self, node: int) -> None:
        label = self.labels[node]
        if label:
            self._metrics.ingress_node_up.labels(label).set(1)
        if self._several:
            log.info("Restate ingress node %s is reachable", label)
        if not self._up.is_set():
            log.info("Restate ingress is reachable")
            self._up.set()
            self._metrics.ingress_up.set(1)

    def mark_down(self, reason: str, node: int = 0) -> None:
        if self._chooser.mark_down(node, reason):
            label = self.labels[node]
            if label:
                self._metrics.ingress_node_up.labels(label).set(0)
            if self._several:
                log.warning("Restate ingress node %s unreachable (%s)", label, reason)
        if self._up.is_set() and not self._chooser.any_up:
            log.warning("Restate ingress unreachable (%s): pausing fetches", self.reason)
            self._up.clear()
            self._metrics.ingress_up.set(0)

    def pick(self) -> int:
        """The node for the next request (see :class:`bridge.core.nodes.NodeChooser`)."""
        return self._chooser.pick()

    def started(self, node: int) -> int:
        """A send to ``node`` began: counted for the choice and in its metric; returns what
        :meth:`answered` needs."""
        since = self._chooser.started(node)
        label = self.labels[node]
        if label:
            self._metrics.ingress_node_sends.labels(label).inc()
        return since

    def finished(self, node: int) -> None:
        self._chooser.finished(node)

    def nodes(self) -> list[dict[str, Any]]:
        """Each node's state, for the status page."""
        return [
            {
                "node": label,
                "up": state.up,
                "reason": None if state.up else state.reason,
                "in_flight": state.in_flight,
            }
            for label, state in zip(self.labels, self._chooser.nodes, strict=True)
        ]

    async def wait_up(self) -> None:
        await self._up.wait()

    async def probe_forever(
        self, clients: Client | Sequence[Client], interval: float = 2.0
    ) -> None:
        """Ask each node's ``/restate/health`` every ``interval`` seconds, so that a silent
        outage shows too, and a node marked down comes back once it answers."""
        nodes = [clients] if isinstance(clients, Client) else list(clients)
        await asyncio.gather(*(self._probe(i, c, interval) for i, c in enumerate(nodes)))

    async def _probe(self, node: int, client: Client, interval: float) -> None:
        while True:
            try:
                await client.health()
            except IngressError as exc:
                self.mark_down(str(exc), node)
            else:
                self.mark_up(node)
            await asyncio.sleep(interval)
