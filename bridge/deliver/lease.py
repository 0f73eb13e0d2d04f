"""A partition's assignment as delivery sees it: a :class:`Lease`, and the records fetched under it.

The Kafka side (:class:`bridge.consume.book.PartitionBook`) grants one lease per assignment of a
partition and ends it when the partition is revoked (or the bridge closes). Every job of a record
holds its record's lease: a job whose lease ended stops where it is (no retry, no send, no
dead letter) without finishing its record, because the partition's next owner reads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final, TypeVar

from ..core.offsets import PartitionOffsets, TopicPartition
from ..core.record import Record

T = TypeVar("T")


class Ended:
    """The type of :data:`ENDED`."""

    def __repr__(self) -> str:
        return "ENDED"


ENDED: Final = Ended()
"""What :meth:`Lease.unless_ended` returns when the lease ended first."""


class LeaseEnded(Exception):
    """Raised by an attempt that stopped because its lease ended (never judged as a failure:
    :func:`bridge.deliver.retry.persist` returns ``None`` then)."""


class Lease:
    """One assignment of ``tp`` to this process; :meth:`end` marks its revocation."""

    __slots__ = ("_ended", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        state = "ended" if self.ended else "held"
        return f"Lease({self.tp.topic}-{self.tp.partition}, {state})"

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def end(self) -> None:
        """The partition was revoked (or the bridge closes): every job under this lease stops."""
        self._ended.set()

    async def wait(self) -> None:
        """Return once the lease ended."""
        await self._ended.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the lease ends meanwhile."""
        if seconds <= 0 or self.ended:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), seconds)

    async def unless_ended(self, work: Awaitable[T]) -> T | Ended:
        """``await work``, or :data:`ENDED` (``work`` cancelled) as soon as the lease ends."""
        return await unless_set(work, self._ended)


async def unless_set(work: Awaitable[T], event: asyncio.Event) -> T | Ended:
    """``await work``, or :data:`ENDED` (``work`` cancelled) as soon as ``event`` is set."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return ENDED
    return task.result()


@dataclass(eq=False, slots=True)
class PendingRecord:
    """A fetched record and how many of its invocations are still under way."""

    record: Record
    lease: Lease
    """The assignment the record was fetched under."""
    remaining: int
    offsets: PartitionOffsets
    """The offset tracker's token for this record (the tracker ignores a finish from an older
    tracking of the partition)."""

    @property
    def tp(self) -> TopicPartition:
        return self.lease.tp

    @property
    def coordinates(self) -> str:
        """``topic-partition@offset``."""
        return self.record.coordinates
