"""Which offsets may be committed: the contiguous watermark of finished records, per partition.

Records finish out of order (different keys go in parallel); a partition's commit position only
moves past offset N once N and everything fetched before it are finished. Pure: no asyncio.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

__all__ = ["OffsetTracker", "PartitionOffsets", "TopicPartition"]


class TopicPartition(NamedTuple):
    """A partition of a topic. Equal to (and hashed as) aiokafka's own ``TopicPartition`` with
    the same fields, so either finds the other in a dict; the Kafka edge converts for the calls
    that insist on aiokafka's type (:mod:`bridge.consume.port`)."""

    topic: str
    partition: int


class PartitionOffsets:
    """Offsets of one partition, in fetch order (increasing, possibly with gaps).

    Each offset carries when it was fetched (any clock the caller likes, monotonic in the bridge),
    so the age of the oldest unfinished record is known without asking the broker.
    """

    __slots__ = (
        "_fetched_at",
        "_finished",
        "_pending",
        "committable",
        "committed",
        "first_fetched",
    )

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        """Fetched and not yet passed by the watermark; the head is always unfinished."""
        self._fetched_at: deque[float] = deque()
        """When each of ``_pending`` was fetched, in the same order."""
        self._finished: set[int] = set()
        self.committable: int | None = None
        """The next offset to consume, as Kafka wants it committed (last finished + 1)."""
        self.committed: int | None = None
        self.first_fetched: int | None = None
        """The first offset fetched: where the group's committed position stood (or just below
        it, when compaction removed records)."""

    def add(self, offset: int, fetched_at: float = 0.0) -> None:
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} fetched after {self._pending[-1]}")
        if self.committable is not None and offset < self.committable:
            raise ValueError(f"offset {offset} is below the finished watermark {self.committable}")
        if self.first_fetched is None:
            self.first_fetched = offset
        self._pending.append(offset)
        self._fetched_at.append(fetched_at)

    def finish(self, offset: int) -> None:
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            self._fetched_at.popleft()
            self.committable = offset + 1
            finished = self._finished
            while pending and pending[0] in finished:
                head = pending.popleft()
                self._fetched_at.popleft()
                finished.discard(head)
                self.committable = head + 1
        else:
            self._finished.add(offset)

    def passed(self, position: int) -> bool:
        """The consumer's ``position`` moved past offsets that hold no record for the bridge
        (transaction markers, aborted transactions' records, compacted gaps): with nothing
        fetched and unfinished, the committable position follows it, never past an unfinished
        record. True when it moved."""
        if self._pending:
            return False
        if self.committable is not None and position <= self.committable:
            return False
        self.committable = position
        return True

    @property
    def in_progress(self) -> int:
        """Records fetched and not yet finished."""
        return len(self._pending) - len(self._finished)

    @property
    def uncommittable(self) -> int:
        """Records fetched and not yet committable: the unfinished ones, and the finished ones
        waiting behind the oldest unfinished one."""
        return len(self._pending)

    @property
    def lowest_unfinished(self) -> int | None:
        return self._pending[0] if self._pending else None

    def oldest_unfinished_age(self, now: float) -> float:
        """How long ago the oldest unfinished record was fetched; 0 when every one finished."""
        return max(0.0, now - self._fetched_at[0]) if self._fetched_at else 0.0


class OffsetTracker:
    """Per-partition :class:`PartitionOffsets`, and the commits they allow."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self.in_progress = 0

    def add(self, tp: TopicPartition, offset: int, fetched_at: float = 0.0) -> PartitionOffsets:
        """Track ``offset``; the returned owner identifies this assignment of the partition.

        Raises ``ValueError`` when ``offset`` is not above every offset fetched before (the log
        was truncated, or the position was reset); see :meth:`restart`.
        """
        part = self._partitions.get(tp)
        if part is None:
            part = self._partitions[tp] = PartitionOffsets()
        part.add(offset, fetched_at)
        self.in_progress += 1
        return part

    def finish(
        self, tp: TopicPartition, offset: int, owner: PartitionOffsets | None = None
    ) -> None:
        """Mark ``offset`` finished. With ``owner`` (from :meth:`add`), a late finish from before a
        revocation is ignored even if the partition was assigned again since."""
        part = self._partitions.get(tp)
        if part is None or (owner is not None and owner is not part):
            return  # the partition was revoked while the record was under way
        part.finish(offset)
        self.in_progress -= 1

    def partition(self, tp: TopicPartition) -> PartitionOffsets | None:
        return self._partitions.get(tp)

    def to_commit(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Positions that moved since the last :meth:`committed` call."""
        out: dict[TopicPartition, int] = {}
        for tp, part in self._partitions.items():
            if only is not None and tp not in only:
                continue
            if part.committable is not None and part.committable != part.committed:
                out[tp] = part.committable
        return out

    def passed(self, tp: TopicPartition, position: int) -> bool:
        """See :meth:`PartitionOffsets.passed`; only for a partition that fetched something."""
        part = self._partitions.get(tp)
        return part is not None and part.passed(position)

    def committed(self, positions: dict[TopicPartition, int]) -> None:
        for tp, position in positions.items():
            part = self._partitions.get(tp)
            if part is not None:
                part.committed = position

    def forget(self, tps: set[TopicPartition]) -> None:
        """Drop revoked partitions; late completions for them are ignored."""
        for tp in tps:
            part = self._partitions.pop(tp, None)
            if part is not None:
                self.in_progress -= part.in_progress

    def restart(self, tp: TopicPartition) -> int:
        """Track ``tp`` afresh after its offsets went backwards; return how many unfinished
        records were forgotten (their late finishes are ignored, like a revoked partition's)."""
        part = self._partitions.pop(tp, None)
        if part is None:
            return 0
        self.in_progress -= part.in_progress
        return part.in_progress

    def uncommittable(self, tp: TopicPartition) -> int:
        part = self._partitions.get(tp)
        return 0 if part is None else part.uncommittable

    def full(self, bound: int) -> set[TopicPartition]:
        """Partitions holding ``bound`` or more records that are not yet committable."""
        return {tp for tp, part in self._partitions.items() if part.uncommittable >= bound}

    def oldest_unfinished_age(self, tp: TopicPartition, now: float) -> float:
        part = self._partitions.get(tp)
        return 0.0 if part is None else part.oldest_unfinished_age(now)

    def in_progress_of(self, tps: set[TopicPartition]) -> int:
        return sum(p.in_progress for tp, p in self._partitions.items() if tp in tps)

    @property
    def partitions(self) -> dict[TopicPartition, PartitionOffsets]:
        return self._partitions
