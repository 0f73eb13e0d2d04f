"""A job stopped at its blocked partition, waiting for the operator: a :class:`Hold`.

Delivery creates the hold and reports it (:meth:`bridge.deliver.ports.Outcomes.held`); the Kafka
side's partition book keeps it, shows the partition blocked at its offset, and carries out the
operator's release by deciding it (:meth:`Hold.decide`). The job then runs again (``retry``) or
finishes every record it holds as skipped (``skip``). A hold whose lease ends first is over
without a decision; the book remembers the partition as blocked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..core.controls import ReleaseAction
from ..core.offsets import TopicPartition
from ..core.record import Record
from .lease import Ended, Lease


@dataclass(frozen=True, slots=True)
class Held:
    """What a hold stops: the records its job would finish (one, or a batch's), its route, why."""

    records: tuple[Record, ...]
    route: str
    reason: str

    @property
    def offset(self) -> int:
        return self.records[0].offset


class Hold:
    """One job held at its blocked partition until the operator decides or its lease ends."""

    __slots__ = ("_decision", "by_policy", "claimed", "held", "lease")

    def __init__(self, held: Held, lease: Lease, *, by_policy: bool = False) -> None:
        self.held = held
        self.lease = lease
        self.by_policy = by_policy
        """The route's ``block_on`` asked for it (a dead-letter topic would not help)."""
        self.claimed = False
        """A release has taken it (it may be producing the skipped records): no second one may."""
        self._decision: asyncio.Future[ReleaseAction] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"Hold({self.coordinates}, route={self.held.route!r}, claimed={self.claimed})"

    @property
    def tp(self) -> TopicPartition:
        return self.lease.tp

    @property
    def offset(self) -> int:
        return self.held.offset

    @property
    def coordinates(self) -> str:
        return self.held.records[0].coordinates

    @property
    def decided(self) -> bool:
        return self._decision.done()

    def decide(self, action: ReleaseAction) -> None:
        """The operator's release: the job runs again or skips its records."""
        if not self._decision.done():
            self._decision.set_result(action)

    async def wait(self) -> ReleaseAction | None:
        """The operator's decision, or ``None`` when the lease ended first."""
        action = await self.lease.unless_ended(asyncio.shield(self._decision))
        return None if isinstance(action, Ended) else action
