"""bridge.deliver.decisions: every error class x attempt, the 404 grace clock, Retry-After,
dead-letter
produce failures. Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    ProducerClosed,
    RecordListTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from bridge.config import DeliveryConfig
from bridge.core.backoff import Backoff
from bridge.core.status_policy import StatusPolicy, parse_statuses
from bridge.deliver.decisions import (
    Attempts,
    Block,
    DropValue,
    GiveUp,
    Policy,
    Retry,
    after_dead_letter_failure,
    after_send_failure,
)
from bridge.ingress import (
    ConnectError,
    IngressError,
    IngressTimeout,
    InvalidRequest,
    InvocationError,
    NotReady,
    ResponseError,
)

POLICY = Policy(Backoff(initial=0.1, maximum=10.0), unknown_target_grace=60.0)


class Top(random.Random):
    """Jitter at its top: the delay is exactly the ceiling."""

    def random(self) -> float:
        return 1.0


def decide(error: Exception, attempts: Attempts | None = None, now: float = 1000.0) -> object:
    return after_send_failure(error, attempts or Attempts(), now, POLICY, Top())


def ceiling(attempt: int) -> float:
    return min(10.0, 0.1 * 2 ** min(attempt, 10))


# -- the table --------------------------------------------------------------------------------

RETRIED: list[tuple[str, IngressError, str, bool]] = [
    ("connect", ConnectError("refused"), "connect", True),
    ("timeout", IngressTimeout("slow"), "timeout", True),
    ("408", ResponseError(408, "request timeout", source="ingress"), "http_408", False),
    ("425", ResponseError(425, "too early"), "http_425", False),
    ("429", ResponseError(429, "shedding"), "http_429", False),
    ("500", ResponseError(500, "boom"), "http_5xx", True),
    ("502", ResponseError(502, "bad gateway"), "http_5xx", True),
    ("503", ResponseError(503, "unavailable", source="ingress"), "http_5xx", True),
    ("599", ResponseError(599, "odd"), "http_5xx", True),
]

GIVEN_UP: list[tuple[str, IngressError, str, str]] = [
    (
        "400",
        ResponseError(400, "bad delay", source="ingress"),
        "http_400",
        "ingress answered 400 (ingress): bad delay",
    ),
    ("409", ResponseError(409, "conflict"), "http_409", "ingress answered 409: conflict"),
    ("413", ResponseError(413, "too large"), "http_413", "ingress answered 413: too large"),
    ("415", ResponseError(415, "media"), "http_415", "ingress answered 415: media"),
    ("422", ResponseError(422, "unprocessable"), "http_422", "ingress answered 422: unprocessable"),
    ("470", NotReady(470, "not ready"), "http_470", "ingress answered 470: not ready"),
    (
        "invocation 400",
        InvocationError(400, "no such account", source="invocation"),
        "http_400",
        "ingress answered 400 (invocation): no such account",
    ),
    (
        "invocation 404",
        InvocationError(404, "not found", source="invocation"),
        "http_404",
        "ingress answered 404 (invocation): not found",
    ),
    (
        "invocation 503",
        InvocationError(503, "handler said so", source="invocation"),
        "http_5xx",
        "ingress answered 503 (invocation): handler said so",
    ),
    (
        "invocation 429",
        InvocationError(429, "handler said so", source="invocation"),
        "http_429",
        "ingress answered 429 (invocation): handler said so",
    ),
    (
        "invalid request",
        InvalidRequest("POST /x: invalid request: Forbidden control character"),
        "invalid_request",
        "POST /x: invalid request: Forbidden control character",
    ),
    (
        "unexpected answer",
        IngressError("unexpected answer to a send: b'<html>'"),
        "other",
        "unexpected answer to a send: b'<html>'",
    ),
]

ATTEMPTS = [0, 1, 2, 5, 7, 50, 10_000]


@pytest.mark.parametrize("attempt", ATTEMPTS)
@pytest.mark.parametrize(("name", "error", "label", "down"), RETRIED, ids=[r[0] for r in RETRIED])
def test_retryable_errors_retry_forever_with_backoff(
    name: str, error: IngressError, label: str, down: bool, attempt: int
) -> None:
    decision = decide(error, Attempts(attempt))
    assert decision == Retry(ceiling(attempt), Attempts(attempt + 1), label, ingress_down=down)


@pytest.mark.parametrize("attempt", ATTEMPTS)
@pytest.mark.parametrize(
    ("name", "error", "label", "reason"), GIVEN_UP, ids=[g[0] for g in GIVEN_UP]
)
def test_other_errors_give_up_at_once_with_the_answer_as_reason(
    name: str, error: IngressError, label: str, reason: str, attempt: int
) -> None:
    assert decide(error, Attempts(attempt)) == GiveUp(reason, label)


@pytest.mark.parametrize(
    "error",
    [ValueError("bad header"), KeyError("x"), RuntimeError("bug"), AssertionError("no")],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("attempt", [0, 3])
def test_any_other_exception_is_an_internal_error_never_retried(
    error: Exception, attempt: int
) -> None:
    decision = decide(error, Attempts(attempt))
    assert decision == GiveUp(
        f"internal error: {type(error).__name__}: {error}", "internal", unexpected=True
    )


# -- 404: the unknown-target grace -----------------------------------------------------------


@pytest.mark.parametrize("source", ["ingress", None])
def test_first_404_starts_the_grace_clock(source: str | None) -> None:
    error = ResponseError(404, "unknown service", source=source)
    assert decide(error, Attempts(), now=500.0) == Retry(
        ceiling(0), Attempts(1, 500.0), "http_404", grace_started=True
    )


@pytest.mark.parametrize(
    ("since", "now", "retried"),
    [
        (500.0, 500.0, True),
        (500.0, 530.0, True),
        (500.0, 559.999, True),
        (500.0, 560.0, False),  # exactly the grace: given up
        (500.0, 10_000.0, False),
    ],
)
def test_404_is_retried_within_the_grace_then_given_up(
    since: float, now: float, retried: bool
) -> None:
    error = ResponseError(404, "unknown service", source="ingress")
    decision = decide(error, Attempts(4, since), now=now)
    if retried:
        assert decision == Retry(ceiling(4), Attempts(5, since), "http_404")
    else:
        assert decision == GiveUp("ingress answered 404 (ingress): unknown service", "http_404")


def test_grace_counts_from_the_first_404_not_from_earlier_failures() -> None:
    # 20 attempts of 503 first (an outage), then a 404: the grace starts with the 404
    attempts = Attempts()
    for _ in range(20):
        decision = decide(ResponseError(503, "down"), attempts, now=0.0)
        assert isinstance(decision, Retry)
        attempts = decision.attempts
    assert attempts == Attempts(20, None)
    decision = decide(ResponseError(404, "unknown"), attempts, now=1_000_000.0)
    assert isinstance(decision, Retry)
    assert decision.attempts == Attempts(21, 1_000_000.0)
    # a 503 in the middle of the grace keeps the 404 clock
    decision = decide(ResponseError(503, "down"), decision.attempts, now=1_000_030.0)
    assert isinstance(decision, Retry)
    assert decision.attempts.unknown_target_since == 1_000_000.0


def test_zero_grace_gives_up_on_the_second_404() -> None:
    policy = Policy(Backoff(0.1, 10.0), unknown_target_grace=0.0)
    error = ResponseError(404, "unknown")
    first = after_send_failure(error, Attempts(), 5.0, policy, Top())
    assert isinstance(first, Retry)
    assert isinstance(after_send_failure(error, first.attempts, 5.0, policy, Top()), GiveUp)


# -- a route's status lists (retry_on, dead_letter_on, block_on) -------------------------------

ROUTE_POLICY = dataclasses.replace(
    POLICY,
    statuses=StatusPolicy(
        retry_on=parse_statuses([409, "400"], "retry_on")[0],
        dead_letter_on=parse_statuses(["5xx", 429, 404], "dead_letter_on")[0],
        block_on=parse_statuses(["410-422"], "block_on")[0],
    ),
)


def decide_for_route(
    error: Exception, attempts: Attempts | None = None, now: float = 1000.0
) -> object:
    return after_send_failure(error, attempts or Attempts(), now, ROUTE_POLICY, Top())


LISTED: list[tuple[str, IngressError, object]] = [
    # retry_on: retried forever, with backoff; ingress down only for what is "down" by default
    ("409 retry", ResponseError(409, "conflict", source="ingress"), "retry"),
    ("400 retry", ResponseError(400, "bad", source="ingress"), "retry"),
    ("409 no source retry", ResponseError(409, "conflict"), "retry"),
    # dead_letter_on: given up at once, whatever the default was
    ("503 dead", ResponseError(503, "unavailable", source="ingress"), "dead_letter"),
    ("500 dead", ResponseError(500, "boom"), "dead_letter"),
    ("429 dead", ResponseError(429, "busy", retry_after=1.0), "dead_letter"),
    ("404 dead, no grace", ResponseError(404, "unknown service", source="ingress"), "dead_letter"),
    # block_on: given up, blocking even with a dead-letter topic
    ("413 block", ResponseError(413, "too large", source="ingress"), "block"),
    ("410 block", ResponseError(410, "gone"), "block"),
    ("422 block", ResponseError(422, "unprocessable"), "block"),
]


@pytest.mark.parametrize("attempt", [0, 3, 10_000])
@pytest.mark.parametrize(("name", "error", "treatment"), LISTED, ids=[x[0] for x in LISTED])
def test_a_listed_status_gets_its_lists_treatment(
    name: str, error: IngressError, treatment: str, attempt: int
) -> None:
    decision = decide_for_route(error, Attempts(attempt, 42.0))
    label = error.reason
    if treatment == "retry":
        assert decision == Retry(ceiling(attempt), Attempts(attempt + 1, 42.0), label)
    elif treatment == "dead_letter":
        assert decision == GiveUp(f"ingress answered {error} (dead_letter_on)", label)
    else:
        assert decision == GiveUp(f"ingress answered {error} (block_on)", label, block=True)


def test_retry_on_honours_retry_after_and_marks_a_5xx_down() -> None:
    policy = dataclasses.replace(
        POLICY, statuses=StatusPolicy(retry_on=parse_statuses(["409", "5xx"], "retry_on")[0])
    )
    conflict = ResponseError(409, "conflict", retry_after=3.0)
    decision = after_send_failure(conflict, Attempts(), 0.0, policy, Top())
    assert decision == Retry(3.0, Attempts(1), "http_409", ingress_down=False)
    down = ResponseError(502, "bad gateway")
    decision = after_send_failure(down, Attempts(), 0.0, policy, Top())
    assert decision == Retry(ceiling(0), Attempts(1), "http_5xx", ingress_down=True)


UNLISTED: list[tuple[str, Exception]] = [
    ("408", ResponseError(408, "request timeout")),
    ("425", ResponseError(425, "too early")),
    ("401", ResponseError(401, "token refused", source="ingress")),
    ("400 handler", InvocationError(400, "no such account", source="invocation")),
    ("503 handler", InvocationError(503, "handler said so", source="invocation")),
    ("409 handler", InvocationError(409, "handler said so", source="invocation")),
    ("413 handler", InvocationError(413, "handler said so", source="invocation")),
    ("connect", ConnectError("refused")),
    ("timeout", IngressTimeout("slow")),
    ("invalid request", InvalidRequest("POST /x: invalid request")),
    ("internal", RuntimeError("bug")),
]


@pytest.mark.parametrize(("name", "error"), UNLISTED, ids=[x[0] for x in UNLISTED])
def test_what_no_list_names_and_handler_errors_keep_the_default(
    name: str, error: Exception
) -> None:
    """A handler's terminal error is the invocation's outcome, not the ingress's answer: the
    lists never apply to it (retrying would only get the same outcome again)."""
    assert decide_for_route(error, Attempts(2)) == decide(error, Attempts(2))


def test_404_outside_the_lists_keeps_its_grace() -> None:
    policy = dataclasses.replace(
        POLICY, statuses=StatusPolicy(retry_on=parse_statuses([409], "retry_on")[0])
    )
    error = ResponseError(404, "unknown service", source="ingress")
    decision = after_send_failure(error, Attempts(), 500.0, policy, Top())
    assert decision == Retry(ceiling(0), Attempts(1, 500.0), "http_404", grace_started=True)


def test_retry_on_404_retries_past_the_grace() -> None:
    policy = dataclasses.replace(
        POLICY, statuses=StatusPolicy(retry_on=parse_statuses([404], "retry_on")[0])
    )
    error = ResponseError(404, "unknown service", source="ingress")
    decision = after_send_failure(error, Attempts(9, 0.0), 1e9, policy, Top())
    assert decision == Retry(ceiling(9), Attempts(10, 0.0), "http_404")


# -- a server without scoped invocations -------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "scoped invocations require vqueues to be enabled",
        "scope is not supported for Virtual Object targets",
    ],
)
@pytest.mark.parametrize("source", ["ingress", None])
def test_scopes_switched_off_on_the_server_are_retried_with_the_ingress_down(
    message: str, source: str | None
) -> None:
    error = ResponseError(400, message, source=source)
    decision = decide(error, Attempts(3))
    assert decision == Retry(ceiling(3), Attempts(4), "http_400", ingress_down=True)


def test_other_400s_about_scopes_are_the_records_fault() -> None:
    error = ResponseError(400, "bad scope value: value too long: 37 bytes (max 36)")
    assert decide(error) == GiveUp(f"ingress answered {error}", "http_400")
    handler = InvocationError(400, "scoped invocations require vqueues to be enabled")
    assert isinstance(decide(handler), GiveUp)


def test_a_list_naming_400_wins_over_the_scope_rule() -> None:
    error = ResponseError(400, "scoped invocations require vqueues to be enabled")
    assert decide_for_route(error) == Retry(ceiling(0), Attempts(1), "http_400")
    blocking = dataclasses.replace(
        POLICY, statuses=StatusPolicy(block_on=parse_statuses([400], "block_on")[0])
    )
    decision = after_send_failure(error, Attempts(), 0.0, blocking, Top())
    assert isinstance(decision, GiveUp)
    assert decision.block


# -- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "attempt", "delay"),
    [
        (None, 0, 0.1),
        (0.0, 0, 0.1),
        (0.05, 0, 0.1),  # the backoff is longer
        (2.0, 0, 2.0),  # a floor
        (2.0, 6, 6.4),
        (9.99, 0, 9.99),
        (10.0, 0, 10.0),
        (11.0, 0, 10.0),  # capped at retry_max
        (1e12, 0, 10.0),
        (2.5e11, 3, 10.0),  # an HTTP date in year 9999
        (math.inf, 0, 10.0),
        (math.nan, 0, 0.1),  # ignored
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_up_to_retry_max(
    status: int, retry_after: float | None, attempt: int, delay: float
) -> None:
    error = ResponseError(status, "busy", retry_after=retry_after)
    decision = decide(error, Attempts(attempt))
    assert isinstance(decision, Retry)
    assert decision.delay == pytest.approx(delay)


def test_retry_after_on_a_404_within_grace_is_capped_too() -> None:
    error = ResponseError(404, "unknown", retry_after=1e12)
    decision = decide(error, Attempts())
    assert isinstance(decision, Retry)
    assert decision.delay == 10.0


@pytest.mark.parametrize("seed", range(20))
def test_every_retry_delay_is_within_bounds(seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(40):
        for error in (ConnectError("x"), ResponseError(429, "x", retry_after=rng.random() * 20)):
            decision = after_send_failure(error, Attempts(attempt), 0.0, POLICY, rng)
            assert isinstance(decision, Retry)
            assert 0.05 <= decision.delay <= 10.0


def test_policy_from_config() -> None:
    from datetime import timedelta

    delivery = DeliveryConfig(
        retry_initial=timedelta(milliseconds=5),
        retry_max=timedelta(seconds=2),
        unknown_target_grace=timedelta(seconds=7),
    )
    assert Policy.from_config(delivery) == Policy(Backoff(0.005, 2.0), 7.0)


# -- dead-letter produce failures -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError("gone"),
        RequestTimedOutError(),
        NotEnoughReplicasError(),
        UnknownTopicOrPartitionError(),
        KafkaTimeoutError(),  # aiokafka marks it non-retriable; it means no broker answered
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("attempt", [0, 3, 1000])
@pytest.mark.parametrize("value_dropped", [False, True])
def test_retriable_produce_errors_are_retried(
    error: Exception, attempt: int, value_dropped: bool
) -> None:
    decision = after_dead_letter_failure(error, attempt, value_dropped, POLICY, Top())
    assert decision == Retry(ceiling(attempt), Attempts(attempt + 1), type(error).__name__)


@pytest.mark.parametrize(
    "error",
    [
        MessageSizeTooLargeError("The message is 2000000 bytes when serialized"),  # producer check
        MessageSizeTooLargeError(),  # the broker's answer
        RecordListTooLargeError(),
        RecordTooLargeError(),
    ],
    ids=lambda e: f"{type(e).__name__}:{e}",
)
def test_too_large_drops_the_value_then_blocks(error: Exception) -> None:
    first = after_dead_letter_failure(error, 0, False, POLICY)
    assert first == DropValue(f"too large: {type(error).__name__}: {error}")
    again = after_dead_letter_failure(error, 1, True, POLICY)
    assert again == Block(
        f"dead-letter produce failed without the value too: {type(error).__name__}: {error}"
    )


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError(), ProducerClosed()], ids=lambda e: type(e).__name__
)
def test_other_non_retriable_errors_drop_the_value_once_then_block(error: Exception) -> None:
    assert not getattr(error, "retriable", True)
    first = after_dead_letter_failure(error, 0, False, POLICY)
    assert first == DropValue(f"refused: {type(error).__name__}: {error}")
    assert isinstance(after_dead_letter_failure(error, 5, True, POLICY), Block)


@pytest.mark.parametrize("value_dropped", [False, True])
def test_a_non_kafka_exception_from_the_producer_blocks_at_once(value_dropped: bool) -> None:
    error = AssertionError("Need at least one: key or value")
    assert after_dead_letter_failure(error, 0, value_dropped, POLICY) == Block(
        "dead-letter produce failed: AssertionError: Need at least one: key or value"
    )
