"""Which Restate ingress node a send goes to. Pure: no I/O, no asyncio, no clock.

``[restate] ingress_url`` may name several nodes of one Restate cluster. Each node is up or down:
a send that fails as the ingress being unwell (connection, timeout, 5xx, 401, 403: the failures
that mark the ingress down in :mod:`bridge.deliver.decisions`) marks its node down, and the node's
health
probe marks it up again, or a send that was made to it while it was down (when every node was)
and succeeded. A send that was already under way when its node went down does not bring it back:
a node being stopped answers the sends it had before it refuses new ones.

A send goes to the up node with the fewest sends under way, ties taken in turn, so that equal
nodes share the load evenly and a slow node gets less. While every node is down, sends take the
nodes in turn (fetching is paused meanwhile; the retries of what was under way find the first
node that answers again).

Order per key does not depend on the node: a lane sends a key's next record only after the ingress
accepted the previous one, wherever it went, and every node enqueues into the same cluster.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass


def node_label(url: str) -> str:
    """``url`` without credentials (``https://user:secret@host`` -> ``https://host``): how
    metrics, logs and the status page name a node."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@dataclass(slots=True)
class NodeState:
    up: bool = False
    """Answered last time it was asked (a send or the probe); nodes start down until then."""
    reason: str = "not checked yet"
    """Why it is down (the last failure)."""
    in_flight: int = 0
    """Sends under way to it right now."""
    downs: int = 0
    """How many times it went down: a send remembers it at its start (see ``answered``)."""


class NodeChooser:
    """The state of ``count`` nodes, and the choice of a node for each send."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one node")
        self.nodes = [NodeState() for _ in range(count)]
        self._turn = 0

    @property
    def any_up(self) -> bool:
        return any(n.up for n in self.nodes)

    def pick(self) -> int:
        """The node for the next send: among the up nodes the one with the fewest sends under
        way, ties in turn; every node in turn while none is up."""
        count = len(self.nodes)
        start = self._turn
        self._turn = (start + 1) % count
        best: int | None = None
        for step in range(count):
            i = (start + step) % count
            node = self.nodes[i]
            if node.up and (best is None or node.in_flight < self.nodes[best].in_flight):
                best = i
        return start if best is None else best

    def started(self, node: int) -> int:
        """A send to ``node`` began; what :meth:`answered` needs to know when it succeeds."""
        state = self.nodes[node]
        state.in_flight += 1
        return state.downs

    def answered(self, node: int, since: int) -> bool:
        """A send to ``node`` that began at ``since`` (what :meth:`started` returned)
        succeeded: the node is up, unless it went down after that send began (a node shutting
        down answers what it had). True when it was down and is up now."""
        if self.nodes[node].downs != since:
            return False
        return self.mark_up(node)

    def finished(self, node: int) -> None:
        """A send to ``node`` ended, however."""
        self.nodes[node].in_flight -= 1

    def mark_up(self, node: int) -> bool:
        """``node`` answered; True when it was down."""
        state = self.nodes[node]
        changed = not state.up
        state.up = True
        return changed

    def mark_down(self, node: int, reason: str) -> bool:
        """``node`` failed for ``reason``; True when it was up."""
        state = self.nodes[node]
        changed = state.up
        if changed:
            state.downs += 1
        state.up = False
        state.reason = reason
        return changed

    def down(self) -> list[int]:
        """The nodes that are down, in order."""
        return [i for i, n in enumerate(self.nodes) if not n.up]


def describe_down(labels: Sequence[str], chooser: NodeChooser) -> str:
    """``node URL: reason; ...`` for the nodes that are down (one node: its reason alone)."""
    if len(labels) == 1:
        return chooser.nodes[0].reason
    return "; ".join(f"node {labels[i]}: {chooser.nodes[i].reason}" for i in chooser.down())
