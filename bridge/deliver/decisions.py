"""What the dispatcher does after a failure, as data. Pure: no I/O, no asyncio, no clock reads.

Four questions, four functions:

    after_send_failure(error, attempts, now, policy)  ->  Retry | GiveUp
    after_dead_letter_failure(error, attempt, value_dropped, policy)  ->  Retry | DropValue | Block
    after_attach_failure(error, attempt, now, deadline, ...)  ->  Retry | Failed | GiveUp
    after_reply_failure(error, attempt, policy)  ->  Retry | GiveUp

The dispatcher applies the answer (sleep, mark the ingress down, dead-letter, block); every rule
about *which* answer lives here and is tested as a table.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from ..config import DeliveryConfig
from ..core.backoff import Backoff
from ..core.durations import format_duration
from ..core.status_policy import StatusPolicy
from ..ingress import IngressError, InvocationError
from ..sinks.replies import Failed, ReplyTopicMissing

DOWN_REASONS = frozenset({"connect", "timeout", "http_5xx", "http_401", "http_403"})
"""Failures that say the ingress itself is unwell, or refuses the bridge's credentials: fetching
pauses until it answers again."""

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
"""The producer's own size check and the broker's answers for a record it will not store."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The delivery settings the decisions need."""

    backoff: Backoff = field(default_factory=Backoff)
    """Retry delays, capped at ``retry_max`` whatever a ``Retry-After`` says."""
    unknown_target_grace: float = 60.0
    """Seconds a 404 for an unknown service or handler is retried."""
    statuses: StatusPolicy = field(default_factory=StatusPolicy)
    """A route's ``retry_on`` / ``dead_letter_on`` / ``block_on``: they win over the defaults."""

    @classmethod
    def from_config(cls, delivery: DeliveryConfig) -> Policy:
        return cls(
            Backoff(delivery.retry_initial.total_seconds(), delivery.retry_max.total_seconds()),
            delivery.unknown_target_grace.total_seconds(),
        )


@dataclass(frozen=True, slots=True)
class Attempts:
    """What is remembered about one invocation's failed sends so far."""

    count: int = 0
    unknown_target_since: float | None = None
    """When the ingress first answered 404 for the target (a deployment may be registering)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait ``delay`` seconds, then try again with ``attempts``."""

    delay: float
    attempts: Attempts
    label: str
    """The metric reason (``ingress_errors_total{reason}``)."""
    ingress_down: bool = False
    """The ingress looks unreachable: mark it down (fetching pauses, ``/readyz`` fails)."""
    grace_started: bool = False
    """First 404 for this target: say once that it is retried for the grace period."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The invocation can never succeed: dead-letter the record (or block without a topic)."""

    reason: str
    label: str
    unexpected: bool = False
    """Not an ingress answer but an exception nobody expected (log it with its traceback)."""
    block: bool = False
    """Stop the partition at this record even when a dead-letter topic exists (``block_on``)."""


@dataclass(frozen=True, slots=True)
class DropValue:
    """Produce the dead letter again without the record's value, saying ``why``."""

    why: str


@dataclass(frozen=True, slots=True)
class Block:
    """The dead letter cannot be written: stop the partition at this record, visibly."""

    reason: str


def _again(
    error: IngressError,
    attempts: Attempts,
    policy: Policy,
    rng: random.Random | None,
    *,
    down: bool = False,
    since: float | None = None,
    started: bool = False,
) -> Retry:
    """Send again after the backoff (or the answer's ``Retry-After``); ``since``: when the
    first 404 came (kept from ``attempts`` when not given)."""
    return Retry(
        policy.backoff.delay(attempts.count, error.retry_after, rng),
        Attempts(attempts.count + 1, attempts.unknown_target_since if since is None else since),
        error.reason,
        ingress_down=down,
        grace_started=started,
    )


def after_send_failure(
    error: Exception,
    attempts: Attempts,
    now: float,
    policy: Policy,
    rng: random.Random | None = None,
) -> Retry | GiveUp:
    """What to do after a send of one invocation failed with ``error`` at monotonic time ``now``.

    - an ingress answer (not a handler's terminal error) whose status the route's
      ``policy.statuses`` names: ``retry_on`` retries forever as below, ``dead_letter_on`` gives
      up, ``block_on`` gives up and blocks; the lists win over every rule after this one, the
      404 grace included;
    - a 400 saying the server has scoped invocations switched off: retry forever and mark the
      ingress down (the server's configuration is at fault, not the record);
    - retryable ingress errors (connection, timeout, 401/403 not from a handler, 408, 425, 429,
      5xx): retry forever with backoff, honouring ``retry_after`` up to ``retry_max``; connection,
      timeout, 401, 403 and 5xx mark the ingress down;
    - 404 not from the handler: retry until ``unknown_target_grace`` has passed since the first
      404, then give up;
    - any other ingress error: give up, with the answer as the reason;
    - anything else (a bug, a value the client could not handle): give up as an internal error.
    """
    if not isinstance(error, IngressError):
        return GiveUp(f"internal error: {type(error).__name__}: {error}", "internal", True)
    label = error.reason
    status = error.status
    if status is not None and not _from_handler(error) and policy.statuses:
        treatment = policy.statuses.treatment(status)
        if treatment == "retry":
            return _again(error, attempts, policy, rng, down=label in DOWN_REASONS)
        if treatment == "dead_letter":
            return GiveUp(f"ingress answered {error} (dead_letter_on)", label)
        if treatment == "block":
            return GiveUp(f"ingress answered {error} (block_on)", label, block=True)
    if scopes_switched_off(error):
        return _again(error, attempts, policy, rng, down=True)
    if error.retryable:
        return _again(error, attempts, policy, rng, down=label in DOWN_REASONS)
    if error.status == 404 and error.source != "invocation":
        since = attempts.unknown_target_since
        if since is None or now - since < policy.unknown_target_grace:
            first = now if since is None else since
            return _again(error, attempts, policy, rng, since=first, started=since is None)
    if error.status is None:
        return GiveUp(str(error), label)
    return GiveUp(f"ingress answered {error}", label)


SCOPES_SWITCHED_OFF = (
    "scoped invocations require vqueues to be enabled",
    "scope is not supported for virtual object targets",
)
"""How Restate 1.7 says (400, source ``ingress``) that its experimental options for scoped
invocations (``experimental-enable-vqueues``, ``experimental-enable-scoped-virtual-objects``)
are off."""


def scopes_switched_off(error: IngressError) -> bool:
    """The ingress refused a scoped invocation because the server does not enable scopes: no
    record is at fault, and every record of the route would be refused alike."""
    if error.status != 400 or _from_handler(error):
        return False
    message = error.message.lower()
    return any(phrase in message for phrase in SCOPES_SWITCHED_OFF)


def _from_handler(error: IngressError) -> bool:
    """A handler's terminal error (the invocation's outcome), not the ingress's own answer."""
    return isinstance(error, InvocationError) or error.source == "invocation"


def after_dead_letter_failure(
    error: Exception,
    attempt: int,
    value_dropped: bool,
    policy: Policy,
    rng: random.Random | None = None,
) -> Retry | DropValue | Block:
    """What to do after producing a dead letter failed (``attempt`` counts the failures so far,
    ``value_dropped`` says whether that dead letter was already the one without the value).

    Retriable Kafka errors (and the producer's own timeout, which aiokafka marks non-retriable
    although it only means no broker answered in time) are retried with backoff. A record the
    broker refuses as too large, or any other non-retriable error, is tried once more without
    its value; when that fails too, the partition blocks. An exception that is not a Kafka
    error blocks at once: retrying a bug would never end.
    """
    if not isinstance(error, KafkaError):
        return Block(f"dead-letter produce failed: {type(error).__name__}: {error}")
    name = type(error).__name__
    if error.retriable or isinstance(error, KafkaTimeoutError):
        return Retry(policy.backoff.delay(attempt, None, rng), Attempts(attempt + 1), name)
    if not value_dropped:
        why = "too large" if isinstance(error, TOO_LARGE) else "refused"
        return DropValue(f"{why}: {name}: {error}")
    return Block(f"dead-letter produce failed without the value too: {name}: {error}")


# -- reply routes -----------------------------------------------------------------------------


def wait_exceeded(max_wait: float, invocation_id: str) -> str:
    """The dead-letter reason of a reply route whose result did not come in time."""
    waited = format_duration(timedelta(seconds=max_wait))
    return f"no result within {waited}; the invocation {invocation_id} keeps running in Restate"


def after_attach_failure(
    error: Exception,
    attempt: int,
    now: float,
    deadline: float,
    max_wait: float,
    invocation_id: str,
    policy: Policy,
    rng: random.Random | None = None,
) -> Retry | Failed | GiveUp:
    """What to do after attaching to an accepted invocation failed at ``now`` (monotonic).

    - the handler failed terminally: reply with that error (:class:`Failed`);
    - past ``deadline`` (the route's maximum wait after acceptance), whatever the error:
      give up with :func:`wait_exceeded`'s reason (the record is dead-lettered);
    - retryable ingress errors (connection, timeout, 5xx, ...): retry with backoff, never
      sleeping past the deadline;
    - any other ingress answer (404: the invocation is unknown or its result expired): give up;
    - anything else: give up as an internal error.
    """
    if isinstance(error, InvocationError):
        code = error.code if error.code is not None else error.status
        return Failed(code, error.message)
    if now >= deadline:
        return GiveUp(wait_exceeded(max_wait, invocation_id), "reply_timeout")
    if not isinstance(error, IngressError):
        return GiveUp(f"internal error: {type(error).__name__}: {error}", "internal", True)
    label = f"attach_{error.reason}"
    if error.retryable:
        delay = min(policy.backoff.delay(attempt, error.retry_after, rng), deadline - now)
        return Retry(delay, Attempts(attempt + 1), label)
    return GiveUp(f"attaching to {invocation_id}: ingress answered {error}", label)


def after_reply_failure(
    error: Exception, attempt: int, policy: Policy, rng: random.Random | None = None
) -> Retry | GiveUp:
    """What to do after producing a reply failed (``attempt`` counts the failures so far).

    A missing reply topic, a retriable Kafka error and the producer's own timeout are retried
    with backoff, without end: the result is known and nothing is lost while the topic is
    created or the broker recovers (the record stays unfinished, so its offset is not
    committed). A reply the broker refuses otherwise (too large, not authorized, ...) gives
    up: the record is dead-lettered with the reason.
    """
    delay = policy.backoff.delay(attempt, None, rng)
    if isinstance(error, ReplyTopicMissing):
        return Retry(delay, Attempts(attempt + 1), "topic_missing")
    if not isinstance(error, KafkaError):
        return GiveUp(f"internal error: {type(error).__name__}: {error}", "internal", True)
    name = type(error).__name__
    if error.retriable or isinstance(error, KafkaTimeoutError):
        return Retry(delay, Attempts(attempt + 1), "produce")
    return GiveUp(f"the reply could not be produced: {name}: {error}", "produce_refused")
