"""Redriving dead letters, the pure part: a dead letter read back into the record it was, the
filters of ``restate-bridge redrive``, what to send for it, and the run's tally. No I/O.

A dead letter (:mod:`bridge.sinks.deadletter`) is the original record's key, value and headers
followed by the bridge's block of headers: ``bridge.error``, ``bridge.route``, ``bridge.topic``,
``bridge.partition``, ``bridge.offset``, ``bridge.timestamp`` (then ``bridge.skip_reason``,
``bridge.original_value_size`` / ``bridge.value_dropped``, ``bridge.value_null`` when they
apply). :func:`read_letter` takes the headers before the last ``bridge.error`` as the original
ones (so an original header that happens to start with ``bridge.`` survives) and rebuilds the
:class:`Record` at its original coordinates: planning it with the current routes gives the
idempotency key the original send had, so Restate answers ``PreviouslyAccepted`` to a record it
already accepted instead of running it twice.

The original record's time is the ``bridge.timestamp`` header; without one (an older bridge
wrote the dead letter, or the original had no timestamp) the dead letter's own timestamp, the
time it was dead-lettered, stands in for it, which is never earlier than the original.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .batching import batch_body, batch_idempotency_key
from .durations import DurationError, parse_duration
from .record import Record, excerpt
from .routing import Invocation, Poison, Router, Skip

ERROR = "bridge.error"
ROUTE = "bridge.route"
TOPIC = "bridge.topic"
PARTITION = "bridge.partition"
OFFSET = "bridge.offset"
TIMESTAMP = "bridge.timestamp"
"""The original record's timestamp (ms), when the dead letter carries it."""
SKIP_REASON = "bridge.skip_reason"
VALUE_DROPPED = "bridge.value_dropped"
VALUE_NULL = "bridge.value_null"


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter read back: the original record and why it was dead-lettered."""

    record: Record
    """At its original topic, partition and offset, with its original key, value and headers."""
    route: str
    """The route that could not deliver it (``bridge.route``)."""
    error: str
    """Why (``bridge.error``)."""
    skip_reason: str | None = None
    """The operator's reason, for a record a release of its blocked partition skipped."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record of the dead-letter topic that cannot be redriven, and why."""

    reason: str


def read_letter(
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]],
    timestamp: int,
) -> Letter | Unreadable:
    """The original record behind a dead letter, or why it cannot be rebuilt (not written by the
    bridge, a header that does not parse, a value the broker made the bridge drop)."""
    headers = tuple(headers)
    starts = [n for n, (name, _) in enumerate(headers) if name == ERROR]
    if not starts:
        return Unreadable(f"no {ERROR} header: not a dead letter written by the bridge")
    start = starts[-1]
    ours = dict(headers[start:])  # the bridge's block: one of each name
    missing = [h for h in (ROUTE, TOPIC, PARTITION, OFFSET) if h not in ours]
    if missing:
        return Unreadable(
            f"no {', '.join(missing)} header: not a dead letter written by the bridge"
        )
    if VALUE_DROPPED in ours:
        why = _text(ours[VALUE_DROPPED])
        return Unreadable(f"the dead letter carries no value (dropped: {why})")
    try:
        topic, route = _text(ours[TOPIC]), _text(ours[ROUTE])
        partition = _number(ours[PARTITION], PARTITION)
        offset = _number(ours[OFFSET], OFFSET)
        original_time = _number(ours[TIMESTAMP], TIMESTAMP) if TIMESTAMP in ours else timestamp
    except ValueError as exc:
        return Unreadable(str(exc))
    if ours.get(VALUE_NULL) == b"true":
        value = None
    record = Record(topic, partition, offset, original_time, key, value, headers[:start])
    skip = ours.get(SKIP_REASON)
    return Letter(record, route, _text(ours[ERROR]), None if skip is None else _text(skip))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _number(raw: bytes, name: str) -> int:
    text = _text(raw)
    if not text.isdigit() or len(text) > 19:
        raise ValueError(f"{name} is not a non-negative integer: {excerpt(text)}")
    return int(text)


def parse_when(text: str, now: float) -> int:
    """A ``--since`` / ``--until`` value as milliseconds since the epoch: an ISO 8601 date or
    datetime (``2026-12-05``, ``2026-12-05T06:00``, ``...Z``, ``...+01:00``; without a zone:
    UTC), or a duration ago (``2h``, ``30m``, ``1d``, ``PT2H``) counted from ``now`` (seconds
    since the epoch). Raises ``ValueError`` with the accepted forms."""
    raw = text.strip()
    try:
        ago = parse_duration(raw)
    except DurationError:
        pass
    else:
        return int((now - ago.total_seconds()) * 1000)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{excerpt(text)} is neither an ISO 8601 time (2026-12-05T06:00:00Z) nor a "
            "duration ago (2h, 30m, 1d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters a run redrives: every one, unless narrowed."""

    route: str | None = None
    """Only those of this route (``bridge.route``)."""
    reason: re.Pattern[str] | None = None
    """Only those whose ``bridge.error`` this searches (``re.search``)."""
    since: int | None = None
    """Only records at or after this time (ms since the epoch)."""
    until: int | None = None
    """Only records before this time (ms since the epoch)."""

    def excludes(self, letter: Letter) -> str | None:
        """Why ``letter`` is left out, or ``None`` when it is redriven."""
        if self.route is not None and letter.route != self.route:
            return f"route {letter.route!r} is not {self.route!r}"
        if self.reason is not None and self.reason.search(letter.error) is None:
            return f"its error does not match {self.reason.pattern!r}"
        time = letter.record.timestamp
        if self.since is not None and time < self.since:
            return "older than --since"
        if self.until is not None and time >= self.until:
            return "not older than --until"
        return None


def plan_letter(router: Router, letter: Letter) -> Invocation | Skip | str:
    """What the current routes send for ``letter``: the invocation of its route only, as the
    bridge would send it for the original record (same idempotency key), a :class:`Skip` when
    the route now skips it (a tombstone with ``on_null = "skip"``), or why it still fails."""
    if not any(r.name == letter.route for r in router.routes):
        return f"route {letter.route!r} is no longer in the routing file"
    for planned in router.plan(letter.record):
        if planned.route != letter.route:
            continue
        if isinstance(planned, Poison):
            return planned.reason
        if isinstance(planned, Skip):
            return planned
        return as_sent(planned, letter.record)
    return f"route {letter.route!r} no longer takes this record (its topic or match changed)"


def as_sent(item: Invocation, record: Record) -> Invocation:
    """``item`` as a record goes alone: a batch route's record is a batch of one, with the key
    a refused batch's record had when it was sent on its own
    (:func:`bridge.core.batching.batch_idempotency_key` over its one offset)."""
    if item.batch is None or item.body is None:
        return item
    idem = None
    if item.batch.idempotent:
        idem = batch_idempotency_key(
            item.route, record.topic, record.partition, record.offset, record.offset
        )
    return dataclasses.replace(item, body=batch_body([item.body]), idempotency_key=idem)


@dataclass(slots=True)
class Summary:
    """What a run did with the dead letters it read."""

    sent: int = 0
    """Accepted by Restate: they run now."""
    previously_accepted: int = 0
    """Restate had accepted them before (same idempotency key): not run again."""
    still_failing: int = 0
    """Unreadable, refused by the current routes or by the ingress: left in the topic."""
    filtered: int = 0
    """Left out by ``--route``, ``--reason``, ``--since`` or ``--until``."""
    skipped_by_route: int = 0
    """Tombstones the route now skips (``on_null = "skip"``)."""

    @property
    def handled(self) -> int:
        """Dead letters decided so far."""
        return (
            self.sent
            + self.previously_accepted
            + self.still_failing
            + self.filtered
            + self.skipped_by_route
        )

    def line(self, *, dry_run: bool = False) -> str:
        """One line for stderr; a dry run counts what it would send."""
        sent = f"{self.sent} would be sent" if dry_run else f"{self.sent} sent"
        text = (
            f"{sent}, {self.previously_accepted} previously accepted, "
            f"{self.still_failing} still failing, {self.filtered} skipped by filter"
        )
        if self.skipped_by_route:
            text += f", {self.skipped_by_route} skipped by their route"
        return text
