"""The operator's controls at run time, as data: paused routes and topics, orders to skip a
record, the last releases of blocked partitions. Pure: no I/O, no asyncio.

The worker owns one :class:`Controls` for the life of the process (a rebalance does not reset
it) and applies it in two places: the dispatcher holds the jobs of a paused route or topic before
they take any slot, and flow control stops fetching the partitions :func:`fetch_paused` names.

What a request to the admin API may go wrong with is drawn here, sorted by the answer it gets::

    ControlError          (status: the HTTP answer)
    ├── BadRequest        400  a body or a name that can never work (no reason for a skip, ...)
    ├── UnknownName       404  a route or topic the bridge does not read; ``known`` lists them
    ├── NotBlocked        409  a release for a partition that is not blocked (or is being released)
    └── CannotPark        422  a skip to a topic that does not exist or refuses the record
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from .offsets import TopicPartition

ControlKind = Literal["route", "topic"]
ReleaseAction = Literal["retry", "skip"]
RELEASE_ACTIONS: tuple[ReleaseAction, ...] = ("retry", "skip")
MAX_REASON = 1024
"""Characters an operator's reason may have: it goes into a log line and a Kafka header."""
RECENT_RELEASES = 20


class ControlError(Exception):
    """A request the bridge refuses; ``status`` is the HTTP answer, the message its detail."""

    status: ClassVar[int] = 400


class BadRequest(ControlError):
    status = 400


class UnknownName(ControlError):
    status = 404

    def __init__(self, kind: ControlKind, name: str, known: Sequence[str]) -> None:
        listed = ", ".join(known) or "none"
        super().__init__(f"no {kind} named {name!r}; known {kind}s: {listed}")
        self.known = list(known)


class NotBlocked(ControlError):
    status = 409


class CannotPark(ControlError):
    status = 422


class _Reads(Protocol):
    """What :func:`fetch_paused` needs of a route (``RouteConfig`` has it)."""

    @property
    def name(self) -> str: ...

    def matches_topic(self, topic: str) -> bool: ...


def readers(topic: str, routes: Iterable[_Reads]) -> list[str]:
    """The names of the routes that read ``topic``."""
    return [r.name for r in routes if r.matches_topic(topic)]


def fetch_paused(
    owned: Iterable[TopicPartition],
    routes: Sequence[_Reads],
    paused_routes: frozenset[str] | set[str],
    paused_topics: frozenset[str] | set[str],
) -> set[TopicPartition]:
    """The owned partitions the operator's pauses stop fetching: those of a paused topic, and
    those whose topic is read only by paused routes. A partition that an unpaused route also
    reads keeps being fetched (the paused route's invocations wait in the dispatcher)."""
    if not paused_routes and not paused_topics:
        return set()
    by_topic: dict[str, bool] = {}
    out: set[TopicPartition] = set()
    for tp in owned:
        paused = by_topic.get(tp.topic)
        if paused is None:
            names = readers(tp.topic, routes)
            paused = tp.topic in paused_topics or (
                bool(names) and all(n in paused_routes for n in names)
            )
            by_topic[tp.topic] = paused
        if paused:
            out.add(tp)
    return out


# -- releasing a blocked partition ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Blocked:
    """A partition stopped at ``offset``: its record can be neither sent nor dead-lettered."""

    tp: TopicPartition
    offset: int
    route: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseRetry:
    """Run the blocking record's job again now, with fresh attempts."""

    reason: str | None = None
    action: ClassVar[ReleaseAction] = "retry"


@dataclass(frozen=True, slots=True)
class ReleaseSkip:
    """Finish the blocking record without sending it: produce it to ``topic`` (encoded as a dead
    letter, with ``reason``) or, without a topic, log it."""

    reason: str
    topic: str | None = None
    action: ClassVar[ReleaseAction] = "skip"


ReleaseRequest = ReleaseRetry | ReleaseSkip
_RELEASE_KEYS = frozenset({"action", "reason", "topic"})


def _reason(value: Any, required: bool) -> str | None:
    if value is None:
        if required:
            raise BadRequest('a skip needs a "reason": why the record may be skipped')
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest('"reason" must be a non-empty string')
    if len(value) > MAX_REASON:
        raise BadRequest(f'"reason" is longer than {MAX_REASON} characters')
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest('"reason" must not hold control characters (line breaks included)')
    return value


def parse_release(
    body: Any, topic_problem: Callable[[str], str | None] | None = None
) -> ReleaseRequest:
    """The release a JSON body asks for: ``{"action": "retry"}`` or ``{"action": "skip",
    "reason": "...", "topic": "parking-lot"}`` (``topic`` optional); :class:`BadRequest`
    otherwise. ``topic_problem`` says what is wrong with a topic name, or ``None``."""
    if not isinstance(body, dict):
        raise BadRequest(
            'send a JSON object: {"action": "retry"} or {"action": "skip", "reason": "...", '
            '"topic": "..."} (topic optional)'
        )
    unknown = sorted(set(body) - _RELEASE_KEYS)
    if unknown:
        raise BadRequest(f"unknown keys {unknown}; a release takes action, reason and topic")
    action = body.get("action")
    if action not in RELEASE_ACTIONS:
        raise BadRequest(f'"action" must be "retry" or "skip", not {action!r}')
    topic = body.get("topic")
    if action == "retry":
        if topic is not None:
            raise BadRequest('"topic" is for a skip; a retry sends the record again')
        return ReleaseRetry(_reason(body.get("reason"), required=False))
    reason = _reason(body.get("reason"), required=True)
    assert reason is not None
    if topic is not None:
        if not isinstance(topic, str):
            raise BadRequest('"topic" must be a string, the topic to produce the record to')
        problem = topic_problem(topic) if topic_problem is not None else None
        if problem is not None:
            raise BadRequest(problem)
    return ReleaseSkip(reason, topic)


Where = Literal["held", "gone"]
"""Where a blocked partition's record is: ``held`` by a job waiting in the dispatcher, or
``gone`` (the partition was revoked since, and maybe assigned back: nothing of it is fetched)."""


def where_blocked(tp: TopicPartition, *, reported: bool, held: int, unfinished: int) -> Where:
    """Decide how a release of ``tp`` is carried out: ``reported`` whether the partition is
    reported blocked, ``held`` how many jobs the dispatcher holds for it, ``unfinished`` how many
    of its fetched records are still unfinished. Raises :class:`NotBlocked`."""
    name = f"{tp.topic}-{tp.partition}"
    if held:
        return "held"
    if not reported:
        raise NotBlocked(f"partition {name} is not blocked")
    if unfinished:
        # blocked, fetched records under way, but no job to release: an internal error while
        # submitting left its record without one
        raise NotBlocked(
            f"partition {name} is blocked by an internal error that left no job to release; "
            "restart the bridge to read it again"
        )
    return "gone"


@dataclass(frozen=True, slots=True)
class SkipOrder:
    """Skip the record at (partition, offset) when it is fetched again: it was blocked, and its
    job was gone (revoked) when the operator asked to skip it."""

    route: str
    """The route whose invocation is skipped; ``""``: every route's."""
    blocked_by: str
    """Why it was blocked (for the dead-letter header and the log)."""
    reason: str
    topic: str | None

    def applies_to(self, route: str) -> bool:
        return self.route in ("", route)


@dataclass(frozen=True, slots=True)
class ReleaseNote:
    """One release, for ``/status.json``."""

    at: float
    topic: str
    partition: int
    offset: int | None
    route: str
    action: ReleaseAction
    reason: str | None
    to: str | None
    """The topic a skipped record went to; ``None``: logged (or a retry)."""

    def view(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "route": self.route,
            "action": self.action,
            "reason": self.reason,
            "to": self.to,
        }


@dataclass
class Controls:
    """The operator's state: process state, kept across rebalances, lost on restart."""

    paused_routes: set[str] = field(default_factory=set)
    paused_topics: set[str] = field(default_factory=set)
    skips: dict[tuple[TopicPartition, int], SkipOrder] = field(default_factory=dict)
    releases: deque[ReleaseNote] = field(default_factory=lambda: deque(maxlen=RECENT_RELEASES))

    @property
    def any_paused(self) -> bool:
        return bool(self.paused_routes or self.paused_topics)

    def is_paused(self, route: str, topic: str) -> bool:
        """Whether the jobs of ``route`` for a record of ``topic`` wait."""
        return route in self.paused_routes or topic in self.paused_topics

    def set_paused(self, kind: ControlKind, name: str, paused: bool) -> bool:
        """Pause or resume ``name``; whether that changed anything (pausing twice is fine)."""
        names = self.paused_routes if kind == "route" else self.paused_topics
        if (name in names) == paused:
            return False
        if paused:
            names.add(name)
        else:
            names.discard(name)
        return True

    def order_skip(self, tp: TopicPartition, offset: int, order: SkipOrder) -> None:
        self.skips[(tp, offset)] = order

    def take_skip(self, tp: TopicPartition, offset: int) -> SkipOrder | None:
        """The skip ordered for this record, once: it is forgotten when taken."""
        if not self.skips:
            return None
        return self.skips.pop((tp, offset), None)

    def note(
        self,
        tp: TopicPartition,
        offset: int | None,
        route: str,
        request: ReleaseRequest,
        at: float | None = None,
    ) -> ReleaseNote:
        note = ReleaseNote(
            time.time() if at is None else at,
            tp.topic,
            tp.partition,
            offset,
            route,
            request.action,
            request.reason,
            request.topic if isinstance(request, ReleaseSkip) else None,
        )
        self.releases.appendleft(note)
        return note

    def view(
        self,
        *,
        topics: Iterable[str],
        paused_partitions: Iterable[TopicPartition],
        blocked: Mapping[TopicPartition, tuple[int, str, str, bool]],
    ) -> dict[str, Any]:
        """The ``controls`` object of ``/status.json``. ``topics`` are the topics the page may
        pause; ``blocked`` maps each blocked partition to (offset, route, reason, owned)."""
        return {
            "paused_routes": sorted(self.paused_routes),
            "paused_topics": sorted(self.paused_topics),
            "topics": [
                {"topic": t, "paused": t in self.paused_topics}
                for t in sorted(set(topics) | self.paused_topics)
            ],
            "paused_partitions": [
                {"topic": tp.topic, "partition": tp.partition} for tp in sorted(paused_partitions)
            ],
            "blocked": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": offset,
                    "route": route,
                    "reason": reason,
                    "owned": owned,
                    "actions": list(RELEASE_ACTIONS),
                }
                for tp, (offset, route, reason, owned) in sorted(blocked.items())
            ],
            "pending_skips": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": offset,
                    "route": order.route,
                    "reason": order.reason,
                    "to": order.topic,
                }
                for (tp, offset), order in sorted(self.skips.items())
            ],
            "releases": [note.view() for note in self.releases],
        }
