"""Flow control: which owned partitions the consumer fetches.

Fetching pauses everywhere when ``delivery.max_pending_records`` records are unfinished or while
the ingress (or the schema registry) is unreachable, so memory is bounded by fetch sizes and
limits, never by the topic. One partition pauses alone when it is blocked, when
``delivery.max_pending_per_partition`` of its records are fetched and not yet committable, or
when the operator paused its topic or every route that reads it. The operator's pauses are read
from :class:`~bridge.core.controls.Controls` at every turn: nothing needs re-applying after a
pause, a resume or a reload.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import BridgeConfig
from ..core.controls import Controls, fetch_paused
from ..core.offsets import TopicPartition
from ..operate.metrics import Metrics
from .book import PartitionBook
from .port import ConsumerPort


class FlowControl:
    """Pauses and resumes the consumer's partitions (module docstring)."""

    def __init__(
        self,
        consumer: ConsumerPort,
        book: PartitionBook,
        controls: Controls,
        config: Callable[[], BridgeConfig],
        metrics: Metrics,
    ) -> None:
        self._consumer = consumer
        self._book = book
        self._controls = controls
        self._config = config
        self._metrics = metrics
        self.subscribed_anew = False
        """Subscribed to other topics since the last assignment: aiokafka has dropped the old
        partitions' state before the revocation callback runs."""
        self._gauges_due = True
        """Set every owned partition's pause gauge at the next turn (after an assignment)."""

    def operator_paused(self, owned: set[TopicPartition]) -> set[TopicPartition]:
        c = self._controls
        return fetch_paused(owned, self._config().routes, c.paused_routes, c.paused_topics)

    def apply(self, fetch: bool) -> None:
        """Pause fetching everywhere (``fetch`` false), or only on the partitions that are
        blocked, hold ``max_pending_per_partition`` records not yet committable, or are paused
        by the operator; resume the rest."""
        book = self._book
        # the callbacks' view of ownership: consumer.assignment() lags behind a revocation
        owned = book.owned
        if self.subscribed_anew:  # aiokafka forgot the old partitions before the callback ran
            owned &= self._consumer.assignment()
        self._note_operator_pauses(owned)
        if fetch:
            bound = self._config().delivery.max_pending_per_partition
            full = book.tracker.full(bound)
            want = owned & (book.blocked_partitions | full | book.operator_paused)
        else:
            want = set(owned)
        was = book.fetch_paused
        if want == was:
            return
        if to_pause := want - was:
            self._consumer.pause(*sorted(to_pause))
        if to_resume := (was - want) & owned:
            self._consumer.resume(*sorted(to_resume))
        book.fetch_paused = want

    def _note_operator_pauses(self, owned: set[TopicPartition]) -> None:
        """Derive the operator-paused partitions; their gauges follow the changes."""
        book = self._book
        now = self.operator_paused(owned)
        if now == book.operator_paused and not self._gauges_due:
            return
        self._gauges_due = False
        book.operator_paused = now
        for tp in owned:
            paused = 1 if tp in now else 0
            self._metrics.partition_paused.labels(tp.topic, str(tp.partition)).set(paused)

    def assigned(self) -> None:
        """A new assignment: its partitions' pause gauges are set at the next turn."""
        self._gauges_due = True
        self.subscribed_anew = False
