"""The partition book: the one owner of every partition's state.

For each partition the book knows whether this process owns it (its current
:class:`~bridge.deliver.lease.Lease`), whether its fetching is paused, its offsets (the
:class:`~bridge.core.offsets.OffsetTracker`), and whether it is blocked: at the jobs delivery
holds there (:class:`~bridge.deliver.holds.Hold`), or, once those jobs are gone (the partition
was revoked), at the offset remembered for the life of the process, so that a partition given
back stays blocked. Everything that asks "what is the state of this partition?" asks the book:
flow control, commits, the gauges, ``/status.json``, the admin API. Delivery reports to it
through :class:`~bridge.deliver.ports.Outcomes`, and the operator's releases go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..core.controls import Blocked, NotBlocked, ReleaseAction
from ..core.offsets import OffsetTracker, PartitionOffsets, TopicPartition
from ..core.record import coordinates
from ..deliver.holds import Held, Hold
from ..deliver.lease import Lease, PendingRecord
from ..operate.metrics import Metrics
from ..operate.status import RecentDeadLetters
from ..sinks.deadletter import DeadLetter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Released:
    """What a release took: the blocked offset, route and reason; ``held``: a job was held
    there (else it was gone, and the record is fetched again)."""

    offset: int
    route: str
    reason: str
    held: bool


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}-{tp.partition}"


class PartitionBook:
    """Per-partition state (module docstring); implements delivery's ``Outcomes``."""

    def __init__(
        self, metrics: Metrics, dead_letters: RecentDeadLetters, clock: Callable[[], float]
    ) -> None:
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._clock = clock
        self.tracker = OffsetTracker()
        self._leases: dict[TopicPartition, Lease] = {}
        self._holds: dict[TopicPartition, list[Hold]] = {}
        self._gone: dict[TopicPartition, Blocked] = {}
        """Blocks whose job is gone (revoked, or never made): kept until released."""
        self._since: dict[TopicPartition, float] = {}
        """When each blocked partition's oldest unfinished record was fetched."""
        self.fetch_paused: set[TopicPartition] = set()
        """The owned partitions whose fetching is paused (what the consumer was told)."""
        self.operator_paused: set[TopicPartition] = set()
        """The owned partitions the operator's pauses stop (derived by flow control)."""
        self.progress = asyncio.Event()
        """Set whenever a record finishes (a drain waits on it)."""

    # -- ownership -------------------------------------------------------------------------

    @property
    def owned(self) -> set[TopicPartition]:
        return set(self._leases)

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._leases

    def lease(self, tp: TopicPartition) -> Lease | None:
        return self._leases.get(tp)

    def assign(self, tps: set[TopicPartition]) -> None:
        """Own ``tps`` from now on, each under a new lease (a fresh assignment is unpaused)."""
        for tp in set(self._leases) - tps:
            self._leases.pop(tp).end()
        self._leases = {tp: self._leases.get(tp) or Lease(tp) for tp in tps}
        self.fetch_paused = set()
        self.operator_paused = set()
        for tp in self.blocked_partitions & tps:
            self._set_blocked_gauge(tp)

    def disown(self, tps: set[TopicPartition]) -> None:
        """No longer own ``tps`` (a revocation under way): nothing of them is taken any more."""
        for tp in tps:
            self._leases.pop(tp, None)
        self.fetch_paused -= tps
        self.operator_paused -= tps

    def end(self, tps: set[TopicPartition], leases: Sequence[Lease]) -> None:
        """The revocation of ``tps`` is done: their jobs stop (``leases`` end), their offsets
        are forgotten; a blocked one stays known."""
        for lease in leases:
            lease.end()
        self.tracker.forget(tps)
        for tp in tps:
            for gauge in self._metrics.partition_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    def end_all(self) -> None:
        """The bridge closes: every job stops."""
        for lease in self._leases.values():
            lease.end()

    # -- records ---------------------------------------------------------------------------

    def track(self, tp: TopicPartition, offset: int) -> PartitionOffsets:
        """Track a fetched record; offsets that went backwards restart the partition."""
        try:
            return self.tracker.add(tp, offset, self._clock())
        except ValueError as exc:
            forgotten = self.tracker.restart(tp)
            log.warning(
                "%s: %s: the partition's offsets went backwards (log truncated or offset reset); "
                "tracking it afresh from here (%d unfinished records before no longer hold its "
                "commit)",
                coordinates(tp.topic, tp.partition, offset),
                exc,
                forgotten,
            )
            return self.tracker.add(tp, offset, self._clock())

    def finished_offset(self, tp: TopicPartition, offset: int, offsets: PartitionOffsets) -> None:
        self.tracker.finish(tp, offset, offsets)
        self.progress.set()

    # -- Outcomes --------------------------------------------------------------------------

    def finished(self, pending: PendingRecord) -> None:
        """Every invocation of ``pending`` was accepted, dead-lettered or skipped."""
        self.finished_offset(pending.tp, pending.record.offset, pending.offsets)

    def held(self, hold: Hold) -> None:
        self._holds.setdefault(hold.tp, []).append(hold)
        self._blocked_now(hold.tp)

    def hold_ended(self, hold: Hold) -> None:
        tp = hold.tp
        holds = self._holds.get(tp, [])
        if hold in holds:
            holds.remove(hold)
        if not holds:
            self._holds.pop(tp, None)
        if not hold.decided:  # revoked (or closing): the partition stays blocked here
            known = self._gone.get(tp)
            if known is None or hold.offset < known.offset:
                self._gone[tp] = Blocked(tp, hold.offset, hold.held.route, hold.held.reason)
        self._unblocked_maybe(tp)

    def dead_lettered(self, letter: DeadLetter) -> None:
        self._dead_letters.add(letter)

    # -- blocked partitions ----------------------------------------------------------------

    def block_without_job(self, blocked: Blocked) -> None:
        """A record that could not be handed to delivery at all (a bug): blocked, visibly."""
        known = self._gone.get(blocked.tp)
        if known is None or blocked.offset < known.offset:
            self._gone[blocked.tp] = blocked
        self._blocked_now(blocked.tp)

    def _live(self, tp: TopicPartition) -> list[Hold]:
        """The holds at ``tp`` the operator has not decided yet."""
        return [h for h in self._holds.get(tp, ()) if not h.decided]

    def blocked(self, tp: TopicPartition) -> Blocked | None:
        """Where ``tp`` is blocked: its lowest held job, else the block remembered for it."""
        holds = self._live(tp)
        if holds:
            first = min(holds, key=lambda h: h.offset)
            gone = self._gone.get(tp)
            if gone is None or first.offset <= gone.offset:
                return Blocked(tp, first.offset, first.held.route, first.held.reason)
            return gone
        return self._gone.get(tp)

    def is_blocked(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is blocked (a held job the operator has not decided, or a block
        remembered for it)."""
        return tp in self._gone or any(not h.decided for h in self._holds.get(tp, ()))

    @property
    def blocked_partitions(self) -> set[TopicPartition]:
        held = {tp for tp, holds in self._holds.items() if any(not h.decided for h in holds)}
        return held | set(self._gone)

    def all_blocked(self) -> dict[TopicPartition, Blocked]:
        out = {}
        for tp in sorted(self.blocked_partitions):
            if (b := self.blocked(tp)) is not None:
                out[tp] = b
        return out

    def blocked_since(self, tp: TopicPartition) -> float | None:
        return self._since.get(tp)

    def held_at(self, tp: TopicPartition) -> list[Held]:
        """The jobs held at ``tp`` that no release has taken yet, lowest offset first."""
        holds = self._holds.get(tp, ())
        return sorted((h.held for h in holds if not h.claimed), key=lambda h: h.offset)

    async def release(
        self,
        tp: TopicPartition,
        action: ReleaseAction,
        prepare: Callable[[Sequence[Held]], Awaitable[None]] | None = None,
    ) -> Released:
        """Release ``tp`` at its lowest blocked offset: decide the jobs held there (``retry``
        runs them again, ``skip`` finishes their records; ``prepare`` runs first, and if it
        raises nothing is released), or forget a block whose job is gone (the record is fetched
        again). Raises :class:`NotBlocked`."""
        live = self._live(tp)
        holds = [h for h in live if not h.claimed]
        gone = self._gone.get(tp)
        if holds and (gone is None or min(h.offset for h in holds) <= gone.offset):
            return await self._decide(tp, holds, action, prepare)
        if live and gone is None:
            raise NotBlocked(f"partition {_name(tp)} is being released already")
        if gone is None:
            raise NotBlocked(f"partition {_name(tp)} is not blocked")
        if self.tracker.in_progress_of({tp}) and not live:
            # blocked, fetched records under way, but no job to release: an internal error
            # while submitting left its record without one
            raise NotBlocked(
                f"partition {_name(tp)} is blocked by an internal error that left no job to "
                "release; restart the bridge to read it again"
            )
        if prepare is not None:
            await prepare([])  # nothing held: it checks what it can (the topic to skip to)
        if self._gone.get(tp) is gone:
            del self._gone[tp]
        self._unblocked_maybe(tp)
        return Released(gone.offset, gone.route, gone.reason, held=False)

    async def _decide(
        self,
        tp: TopicPartition,
        holds: list[Hold],
        action: ReleaseAction,
        prepare: Callable[[Sequence[Held]], Awaitable[None]] | None,
    ) -> Released:
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
        if any(h.lease.ended for h in chosen):  # revoked while the skip was being produced
            for hold in chosen:
                hold.claimed = False
            raise NotBlocked(
                f"partition {_name(tp)} was revoked during the release: its next owner reads "
                f"the record at offset {lowest} again"
            )
        for hold in chosen:
            hold.decide(action)
        self._unblocked_maybe(tp)
        first = chosen[0].held
        return Released(lowest, first.route, first.reason, held=True)

    def _blocked_now(self, tp: TopicPartition) -> None:
        if tp not in self._since:
            now = self._clock()
            self._since[tp] = now - self.tracker.oldest_unfinished_age(tp, now)
        self._set_blocked_gauge(tp)

    def _unblocked_maybe(self, tp: TopicPartition) -> None:
        if self.is_blocked(tp):
            return
        self._since.pop(tp, None)
        self._set_blocked_gauge(tp)

    def _set_blocked_gauge(self, tp: TopicPartition) -> None:
        if tp in self._leases:
            value = 1 if self.is_blocked(tp) else 0
            self._metrics.partition_blocked.labels(tp.topic, str(tp.partition)).set(value)
