"""Fakes at delivery's boundary, for in-process tests of the dispatcher: the Kafka side's
:class:`bridge.deliver.ports.Outcomes` with one lease per partition, and the operator's pauses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bridge.core.controls import Blocked, Controls, NotBlocked, ReleaseAction
from bridge.core.offsets import PartitionOffsets, TopicPartition
from bridge.core.record import Record
from bridge.deliver.holds import Held, Hold
from bridge.deliver.lease import Lease, PendingRecord
from bridge.sinks.deadletter import DeadLetter


@dataclass
class FakeBook:
    """Records what delivery reports; grants a lease per partition until :meth:`revoke`."""

    done: list[PendingRecord] = field(default_factory=list)
    """Every record reported finished, in order."""
    blocked: list[Blocked] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    ended_holds: list[Hold] = field(default_factory=list)
    controls: Controls = field(default_factory=Controls)
    broken_dead_letter_offsets: set[int] = field(default_factory=set)
    """Offsets whose ``dead_lettered`` raises (a bug on the Kafka side)."""
    leases: dict[TopicPartition, Lease] = field(default_factory=dict)

    # -- Outcomes --------------------------------------------------------------------------

    def finished(self, pending: PendingRecord) -> None:
        self.done.append(pending)

    def held(self, hold: Hold) -> None:
        self.holds.append(hold)
        self.blocked.append(Blocked(hold.tp, hold.offset, hold.held.route, hold.held.reason))

    def hold_ended(self, hold: Hold) -> None:
        self.holds.remove(hold)
        self.ended_holds.append(hold)

    def dead_lettered(self, letter: DeadLetter) -> None:
        if letter.record.offset in self.broken_dead_letter_offsets:
            raise RuntimeError("bug in on_dead_letter")
        self.dead.append(letter)

    # -- the Kafka side's part -------------------------------------------------------------

    def lease(self, tp: TopicPartition) -> Lease:
        """The partition's current lease (a new one after a revocation)."""
        lease = self.leases.get(tp)
        if lease is None:
            lease = self.leases[tp] = Lease(tp)
        return lease

    def pending(self, record: Record, remaining: int = 1) -> PendingRecord:
        tp = TopicPartition(record.topic, record.partition)
        return PendingRecord(record, self.lease(tp), remaining, PartitionOffsets())

    def revoke(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            if (lease := self.leases.pop(tp, None)) is not None:
                lease.end()

    def held_at(self, tp: TopicPartition) -> list[Held]:
        """The unclaimed holds of ``tp``, lowest offset first."""
        return sorted(
            (h.held for h in self.holds if h.tp == tp and not h.claimed), key=lambda h: h.offset
        )

    async def release(
        self,
        tp: TopicPartition,
        action: ReleaseAction,
        prepare: Callable[[Sequence[Held]], Awaitable[None]] | None = None,
    ) -> list[Held]:
        """Decide the unclaimed holds at ``tp``'s lowest held offset (as the book does)."""
        holds = [h for h in self.holds if h.tp == tp and not h.claimed]
        if not holds:
            name = f"{tp.topic}-{tp.partition}"
            if any(h.tp == tp for h in self.holds):
                raise NotBlocked(f"partition {name} is being released already")
            raise NotBlocked(f"partition {name} is not blocked")
        lowest = min(h.offset for h in holds)
        chosen = [h for h in holds if h.offset == lowest]
        for hold in chosen:
            hold.claimed = True
        try:
            if prepare is not None:
                await prepare([h.held for h in chosen])
        except BaseException:
            for hold in chosen:
                hold.claimed = False
            raise
        for hold in chosen:
            hold.decide(action)
        return [h.held for h in chosen]
