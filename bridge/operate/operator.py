"""The operator's actions (the admin API and the status page call these): pause and resume a
route or a topic, release a blocked partition, and the ``controls`` view of ``/status.json``.

The pauses are kept in :class:`~bridge.core.controls.Controls` (delivery and flow control read
them there); blocked partitions in the :class:`~bridge.consume.book.PartitionBook`, which also
carries out the release. The operator's controls are process state: they hold across rebalances
and reloads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..consume.book import PartitionBook
from ..consume.routes import RoutesInForce
from ..core.controls import (
    BadRequest,
    ControlKind,
    Controls,
    ReleaseRequest,
    ReleaseSkip,
    SkipOrder,
    UnknownName,
    fetch_paused,
    readers,
)
from ..core.offsets import TopicPartition
from ..deliver.holds import Held
from ..sinks.parking import Parking
from .metrics import Metrics
from .reload import Reloader

log = logging.getLogger(__name__)


def _partitions(tps: set[TopicPartition]) -> list[dict[str, Any]]:
    return [{"topic": tp.topic, "partition": tp.partition} for tp in sorted(tps)]


class Operator:
    """Implements :class:`bridge.operate.admin.Operations`."""

    def __init__(
        self,
        *,
        controls: Controls,
        book: PartitionBook,
        routes: RoutesInForce,
        parking: Parking,
        metrics: Metrics,
        pauses_changed: Callable[[], None],
        reloader: Reloader | None = None,
    ) -> None:
        self._controls = controls
        self._book = book
        self._routes = routes
        self._parking = parking
        self._metrics = metrics
        self._pauses_changed = pauses_changed
        self.reloader = reloader

    # -- pauses ----------------------------------------------------------------------------

    def pause(self, kind: ControlKind, name: str, paused: bool) -> dict[str, Any]:
        """Pause (``paused``) or resume a route or a topic: its jobs wait before taking any
        slot, and the partitions only paused routes read (or of a paused topic) stop fetching.
        Pausing twice is fine; a route or topic that is paused can always be resumed, also
        after a reload removed it. Raises :class:`UnknownName`."""
        routes = self._routes.config.routes
        c = self._controls
        if kind == "route":
            known = [r.name for r in routes]
            if name not in known and not (not paused and name in c.paused_routes):
                raise UnknownName("route", name, known)
            gauge = self._metrics.route_paused.labels(name)
        else:
            if not readers(name, routes) and not (not paused and name in c.paused_topics):
                raise UnknownName("topic", name, self.known_topics())
            gauge = self._metrics.topic_paused.labels(name)
        changed = c.set_paused(kind, name, paused)
        gauge.set(1 if paused else 0)
        if changed:
            log.info("%s %s %s by the operator", kind, name, "paused" if paused else "resumed")
            self._pauses_changed()
        stopped = fetch_paused(self._book.owned, routes, c.paused_routes, c.paused_topics)
        return {
            kind: name,
            "paused": paused,
            "changed": changed,
            "paused_partitions": _partitions(stopped),
        }

    # -- releases --------------------------------------------------------------------------

    async def release(self, tp: TopicPartition, request: ReleaseRequest) -> dict[str, Any]:
        """Release blocked partition ``tp``: retry its blocking record now, or skip it (to a
        topic, or only logged). Raises :class:`bridge.core.controls.ControlError`."""
        skip = request if isinstance(request, ReleaseSkip) else None
        to = skip.topic if skip is not None else None
        if to is not None and (names := readers(to, self._routes.config.routes)):
            raise BadRequest(
                f"topic {to!r} is read by route {', '.join(names)}: the skipped record would "
                "be read again; skip it to a topic no route reads"
            )

        async def prepare(helds: Sequence[Held]) -> None:
            if skip is None:
                return
            if not helds and skip.topic is not None:  # its job is gone: the topic must exist
                await self._parking.check(skip.topic)
            for each in helds:
                for record in each.records:
                    await self._parking.park(
                        record, each.route, each.reason, skip.reason, skip.topic
                    )

        released = await self._book.release(tp, request.action, prepare)
        offset, route = released.offset, released.route
        if skip is not None and not released.held:
            order = SkipOrder(route, released.reason, skip.reason, skip.topic)
            self._controls.order_skip(tp, offset, order)
        self._controls.note(tp, offset, route, request)
        self._metrics.releases.labels(request.action).inc()
        log.info(
            "partition %s-%d released by the operator at offset %d: %s (route %s)%s%s",
            tp.topic,
            tp.partition,
            offset,
            request.action,
            route,
            f": {request.reason}" if request.reason else "",
            "" if released.held else " (its job was gone: the record is fetched again)",
        )
        return {
            "topic": tp.topic,
            "partition": tp.partition,
            "offset": offset,
            "route": route,
            "action": request.action,
            "to": to,
            "refetch": not released.held,
            "still_blocked": self._book.is_blocked(tp),
        }

    # -- views -----------------------------------------------------------------------------

    def controls_view(self) -> dict[str, Any]:
        """The ``controls`` object of ``/status.json``."""
        book = self._book
        blocked = {
            tp: (b.offset, b.route, b.reason, book.owns(tp)) for tp, b in book.all_blocked().items()
        }
        view = self._controls.view(
            topics=self.known_topics(literal=True),
            paused_partitions=book.operator_paused & book.owned,
            blocked=blocked,
        )
        last = self.reloader.last if self.reloader is not None else None
        view["last_reload"] = None if last is None else last.as_json()
        return view

    def known_topics(self, literal: bool = False) -> list[str]:
        """The configured topics and those owned now (a pattern's); with the patterns unless
        ``literal``."""
        config = self._routes.config
        names = set(config.topics) | {tp.topic for tp in self._book.owned}
        if not literal:
            names |= {r.topic_pattern.pattern for r in config.routes if r.topic_pattern}
        return sorted(names)
