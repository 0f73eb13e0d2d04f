"""bridge.controls, the operator's state as data: which owned partitions a pause stops, what a
release body asks for, how a release is carried out, and the ``controls`` view. Tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.config.schema import topic_name_problem
from bridge.core.controls import (
    BadRequest,
    Controls,
    NotBlocked,
    ReleaseRetry,
    ReleaseSkip,
    SkipOrder,
    UnknownName,
    fetch_paused,
    parse_release,
    readers,
    where_blocked,
)
from bridge.core.offsets import TopicPartition


@dataclass(frozen=True)
class R:
    """A route as fetch_paused sees it: a name and the topics it reads (a regex for a pattern)."""

    name: str
    topics: tuple[str, ...] = ()
    pattern: str | None = None

    def matches_topic(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        return self.pattern is not None and re.fullmatch(self.pattern, topic) is not None


ROUTES = [
    R("orders", ("orders",)),
    R("audit", ("orders", "payments")),
    R("payments", ("payments",)),
    R("events", pattern=r"events\..*"),
]
OWNED = {
    TopicPartition("orders", 0),
    TopicPartition("orders", 1),
    TopicPartition("payments", 0),
    TopicPartition("events.a", 0),
    TopicPartition("events.b", 3),
}


def tps(*names: str) -> set[TopicPartition]:
    out = set()
    for name in names:
        topic, _, partition = name.rpartition("-")
        out.add(TopicPartition(topic, int(partition)))
    return out


@pytest.mark.parametrize(
    ("routes", "topics", "paused"),
    [
        ((), (), set()),
        # orders is also read by audit: its records are fetched, orders' invocations wait
        (("orders",), (), set()),
        (("orders", "audit"), (), tps("orders-0", "orders-1")),
        (("audit",), (), set()),
        (("audit", "payments"), (), tps("payments-0")),
        (("orders", "audit", "payments"), (), tps("orders-0", "orders-1", "payments-0")),
        # a pattern's topics: every topic it matches, owned now or later
        (("events",), (), tps("events.a-0", "events.b-3")),
        # a paused topic stops fetching whoever reads it
        ((), ("orders",), tps("orders-0", "orders-1")),
        ((), ("events.b",), tps("events.b-3")),
        ((), ("not-owned",), set()),
        (("payments",), ("orders",), tps("orders-0", "orders-1")),
        # a paused route that reads nothing owned changes nothing
        (("nobody",), (), set()),
    ],
)
def test_fetch_paused(
    routes: tuple[str, ...], topics: tuple[str, ...], paused: set[TopicPartition]
) -> None:
    assert fetch_paused(OWNED, ROUTES, set(routes), set(topics)) == paused


def test_a_topic_no_route_reads_is_never_paused_by_route_pauses() -> None:
    stray = {TopicPartition("stray", 0)}
    assert fetch_paused(stray, ROUTES, {"orders", "audit", "payments", "events"}, set()) == set()
    assert readers("stray", ROUTES) == []
    assert readers("payments", ROUTES) == ["audit", "payments"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"action": "retry"}, ReleaseRetry()),
        ({"action": "retry", "reason": "handler deployed"}, ReleaseRetry("handler deployed")),
        ({"action": "skip", "reason": "bad data"}, ReleaseSkip("bad data")),
        (
            {"action": "skip", "reason": "bad data", "topic": "parking-lot"},
            ReleaseSkip("bad data", "parking-lot"),
        ),
        ({"action": "skip", "reason": "x", "topic": None}, ReleaseSkip("x")),
    ],
)
def test_parse_release_accepts(body: Any, expected: Any) -> None:
    assert parse_release(body, topic_name_problem) == expected


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (None, "send a JSON object"),
        ([], "send a JSON object"),
        ("retry", "send a JSON object"),
        ({}, '"action" must be "retry" or "skip", not None'),
        ({"action": "drop"}, '"action" must be "retry" or "skip"'),
        ({"action": 1}, '"action" must be'),
        ({"action": "skip"}, 'a skip needs a "reason"'),
        ({"action": "skip", "reason": ""}, '"reason" must be a non-empty string'),
        ({"action": "skip", "reason": "   "}, '"reason" must be a non-empty string'),
        ({"action": "skip", "reason": 7}, '"reason" must be a non-empty string'),
        ({"action": "skip", "reason": "a\nb"}, "control characters"),
        ({"action": "skip", "reason": "a\x00"}, "control characters"),
        ({"action": "skip", "reason": "x" * 1025}, "longer than 1024"),
        ({"action": "skip", "reason": "x", "topic": 5}, '"topic" must be a string'),
        ({"action": "skip", "reason": "x", "topic": "a b"}, "topic"),
        ({"action": "skip", "reason": "x", "topic": ""}, "topic"),
        ({"action": "retry", "topic": "t"}, '"topic" is for a skip'),
        ({"action": "retry", "reason": ["x"]}, '"reason" must be a non-empty string'),
        ({"action": "retry", "force": True}, "unknown keys ['force']"),
    ],
)
def test_parse_release_refuses(body: Any, detail: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(detail)):
        parse_release(body, topic_name_problem)


TP = TopicPartition("orders", 3)


@pytest.mark.parametrize(
    ("reported", "held", "unfinished", "where"),
    [
        (True, 1, 5, "held"),
        (True, 2, 0, "held"),
        (False, 1, 1, "held"),  # held, reported later (the callback had not run yet)
        (True, 0, 0, "gone"),  # revoked since (and maybe assigned back): nothing of it fetched
    ],
)
def test_where_blocked(reported: bool, held: int, unfinished: int, where: str) -> None:
    assert where_blocked(TP, reported=reported, held=held, unfinished=unfinished) == where


@pytest.mark.parametrize(
    ("reported", "unfinished", "detail"),
    [
        (False, 0, "partition orders-3 is not blocked"),
        (False, 4, "partition orders-3 is not blocked"),
        (True, 2, "internal error that left no job to release; restart"),
    ],
)
def test_where_blocked_refuses(reported: bool, unfinished: int, detail: str) -> None:
    with pytest.raises(NotBlocked, match=re.escape(detail)):
        where_blocked(TP, reported=reported, held=0, unfinished=unfinished)


def test_errors_carry_their_http_status() -> None:
    assert (BadRequest.status, UnknownName.status, NotBlocked.status) == (400, 404, 409)
    err = UnknownName("route", "nope", ["a", "b"])
    assert str(err) == "no route named 'nope'; known routes: a, b"
    assert err.known == ["a", "b"]
    assert str(UnknownName("topic", "x", [])) == "no topic named 'x'; known topics: none"


def test_pausing_is_idempotent_and_kept_per_kind() -> None:
    c = Controls()
    assert c.set_paused("route", "orders", True) is True
    assert c.set_paused("route", "orders", True) is False
    assert c.set_paused("topic", "orders", True) is True
    assert (c.paused_routes, c.paused_topics) == ({"orders"}, {"orders"})
    assert c.set_paused("route", "orders", False) is True
    assert c.set_paused("route", "orders", False) is False
    assert c.set_paused("route", "never", False) is False
    assert (c.paused_routes, c.paused_topics) == (set(), {"orders"})


def test_a_skip_order_is_taken_once_for_its_record_only() -> None:
    c = Controls()
    order = SkipOrder("rec", "ingress answered 400", "bad data", None)
    c.order_skip(TP, 41, order)
    assert c.take_skip(TP, 40) is None
    assert c.take_skip(TopicPartition("orders", 2), 41) is None
    assert c.take_skip(TP, 41) == order
    assert c.take_skip(TP, 41) is None
    assert order.applies_to("rec")
    assert not order.applies_to("other")
    assert SkipOrder("", "internal", "r", None).applies_to("any")


def test_the_view_lists_pauses_blocked_partitions_and_the_last_releases_newest_first() -> None:
    c = Controls()
    c.set_paused("route", "orders", True)
    c.set_paused("topic", "events.x", True)
    c.order_skip(TP, 9, SkipOrder("rec", "why", "operator", "parking"))
    for n in range(25):
        asked = ReleaseRetry() if n % 2 else ReleaseSkip("bad", "parking")
        c.note(TP, n, "rec", asked, at=float(n))
    view = c.view(
        topics=["orders", "payments"],
        paused_partitions={TopicPartition("orders", 1), TopicPartition("orders", 0)},
        blocked={TP: (7, "rec", "ingress answered 400", True)},
    )
    assert view["paused_routes"] == ["orders"]
    assert view["paused_topics"] == ["events.x"]
    assert view["topics"] == [
        {"topic": "events.x", "paused": True},
        {"topic": "orders", "paused": False},
        {"topic": "payments", "paused": False},
    ]
    assert view["paused_partitions"] == [
        {"topic": "orders", "partition": 0},
        {"topic": "orders", "partition": 1},
    ]
    assert view["blocked"] == [
        {
            "topic": "orders",
            "partition": 3,
            "offset": 7,
            "route": "rec",
            "reason": "ingress answered 400",
            "owned": True,
            "actions": ["retry", "skip"],
        }
    ]
    assert view["pending_skips"] == [
        {
            "topic": "orders",
            "partition": 3,
            "offset": 9,
            "route": "rec",
            "reason": "operator",
            "to": "parking",
        }
    ]
    releases = view["releases"]
    assert len(releases) == 20
    assert [r["offset"] for r in releases[:3]] == [24, 23, 22]
    assert releases[0] == {
        "at": 24.0,
        "topic": "orders",
        "partition": 3,
        "offset": 24,
        "route": "rec",
        "action": "skip",
        "reason": "bad",
        "to": "parking",
    }
    assert releases[1]["action"] == "retry"
    assert releases[1]["to"] is None
