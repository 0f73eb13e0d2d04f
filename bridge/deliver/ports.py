"""The two small interfaces between the Kafka side and delivery.

Records flow one way, from the consumer into :class:`Delivery`; what became of them flows back
through :class:`Outcomes`, which the Kafka side's partition book implements. The operator's
pauses are read where they are kept (:class:`Pauses`, the process's
:class:`bridge.core.controls.Controls`); delivery keeps no copy of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

from ..config import RouteConfig
from ..core.offsets import TopicPartition
from ..core.routing import Invocation, Poison
from ..sinks.deadletter import DeadLetter
from .holds import Hold
from .lease import PendingRecord


class Outcomes(Protocol):
    """What delivery reports back about the records submitted to it."""

    def finished(self, pending: PendingRecord) -> None:
        """Every invocation of ``pending`` ended (accepted, dead-lettered or skipped)."""

    def held(self, hold: Hold) -> None:
        """A job blocked: its partition stops at ``hold.offset`` until the operator decides."""

    def hold_ended(self, hold: Hold) -> None:
        """``hold`` is over: decided by the operator, or its lease ended first."""

    def dead_lettered(self, letter: DeadLetter) -> None:
        """A record was written to the dead-letter topic."""


class Pauses(Protocol):
    """The operator's pauses, read where they are kept."""

    @property
    def any_paused(self) -> bool:
        """Whether any route or topic is paused (the fast path checks only this)."""

    def is_paused(self, route: str, topic: str) -> bool:
        """Whether the jobs of ``route`` for a record of ``topic`` wait."""


class Delivery(Protocol):
    """What the Kafka side asks of delivery."""

    def submit(self, pending: PendingRecord, item: Invocation | Poison) -> None:
        """Send (or dead-letter) one planned invocation of ``pending``."""

    def submit_skip(
        self, pending: PendingRecord, route: str, park: Callable[[], Awaitable[None]]
    ) -> None:
        """Finish ``pending``'s invocation of ``route`` unsent, as the operator ordered."""

    def flush(self, routes: Collection[str] | None = None) -> None:
        """Close the open batches (of ``routes``) now."""

    def unsettled(self, tps: set[TopicPartition]) -> int:
        """Jobs of ``tps`` that may still end on their own (a drain waits for these)."""

    def configure_routes(self, routes: Sequence[RouteConfig]) -> None:
        """Use these routes' settings (at start and on each reload)."""

    def pauses_changed(self) -> None:
        """The operator paused or resumed something: waiting jobs look again."""

    @property
    def missing_reply_topics(self) -> Mapping[str, int]:
        """Reply topics that do not exist, with how many replies wait for each."""

    async def aclose(self) -> None:
        """Cancel everything still under way; safe to call twice."""
