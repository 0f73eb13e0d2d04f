"""bridge.core.redrive: a dead letter read back into its original record, the filters of
``redrive``, what the current routes send for it, the tally."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.core.record import Record
from bridge.core.redrive import (
    Filter,
    Letter,
    Summary,
    Unreadable,
    parse_when,
    plan_letter,
    read_letter,
)
from bridge.core.routing import Invocation, Router, Skip
from bridge.sinks.deadletter import DeadLetter, dead_letter_message

HEAD = '[kafka]\nbootstrap_servers = "b:9092"\n'
RECORD = Record("orders", 3, 41, 1_700_000_000_000, b"acct-7", b'{"n": 1}', (("trace", b"t-1"),))
LETTER_TIME = 1_800_000_000_000


def written(
    record: Record = RECORD, route: str = "ledger", reason: str = "400: bad", **kw: str
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """What the sink produces for ``record``."""
    msg = dead_letter_message(DeadLetter(record, route, reason), **kw)
    return msg.key, msg.value, msg.headers


def read(record: Record = RECORD, **kw: str) -> Letter:
    letter = read_letter(*written(record, **kw), LETTER_TIME)
    assert isinstance(letter, Letter), letter
    return letter


def router(routes: str) -> Router:
    return Router(parse_config(HEAD + routes, Path("routes.toml"), {}))


LEDGER = (
    '[[routes]]\nname = "ledger"\ntopic = "orders"\ntarget = "object"\nservice = "Ledger"\n'
    'handler = "append"\nkey = "{key}"\n'
)


def test_what_the_sink_writes_reads_back_as_the_original_record() -> None:
    letter = read()
    assert letter.route == "ledger"
    assert letter.error == "400: bad"
    assert letter.skip_reason is None
    # the original's time, from bridge.timestamp, not the dead letter's own (LETTER_TIME)
    assert letter.record == RECORD


def test_without_a_bridge_timestamp_the_dead_letters_time_stands_in() -> None:
    key, value, headers = written(Record("orders", 3, 41, -1, b"k", b"v"))
    assert "bridge.timestamp" not in dict(headers)  # the original had none
    letter = read_letter(key, value, headers, LETTER_TIME)
    assert isinstance(letter, Letter)
    assert letter.record.timestamp == LETTER_TIME


def test_original_headers_named_bridge_survive_and_repeats_keep_their_order() -> None:
    headers = (("bridge.mine", b"1"), ("a", b"x"), ("a", b"y"))
    letter = read(Record("orders", 0, 7, 0, b"k", b"v", headers))
    assert letter.record.headers == headers


def test_a_dead_letter_of_a_dead_letter_reads_the_last_block() -> None:
    once = Record("orders", 0, 7, 0, b"k", b"v", ())
    key, value, headers = written(once, route="first")
    again = Record("dlq", 1, 3, 0, key, value, tuple(headers))
    letter = read(again, route="second")
    assert (letter.route, letter.record.topic, letter.record.offset) == ("second", "dlq", 3)
    assert letter.record.headers == tuple(headers)


def test_a_null_value_comes_back_null() -> None:
    assert read(Record("orders", 0, 7, 0, None, None)).record.value is None
    assert read(Record("orders", 0, 7, 0, b"k", None)).record.value is None
    assert read(Record("orders", 0, 7, 0, None, b"")).record.value == b""


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "no bridge.error header: not a dead letter written by the bridge"),
        (
            [("bridge.error", b"x")],
            "no bridge.route, bridge.topic, bridge.partition, bridge.offset",
        ),
        (
            [
                ("bridge.error", b"x"),
                ("bridge.route", b"r"),
                ("bridge.topic", b"t"),
                ("bridge.partition", b"one"),
                ("bridge.offset", b"1"),
            ],
            "bridge.partition is not a non-negative integer: 'one'",
        ),
    ],
)
def test_what_the_bridge_did_not_write_is_unreadable(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    got = read_letter(b"k", b"v", headers, 0)
    assert isinstance(got, Unreadable)
    assert got.reason.startswith(reason)


def test_a_dropped_value_cannot_be_redriven() -> None:
    got = read_letter(*written(drop_value="too large"), 0)
    assert got == Unreadable("the dead letter carries no value (dropped: too large)")


def test_the_skip_reason_of_a_released_record_is_kept() -> None:
    msg = dead_letter_message(DeadLetter(RECORD, "ledger", "400", skip_reason="ticket 12"))
    letter = read_letter(msg.key, msg.value, msg.headers, 0)
    assert isinstance(letter, Letter)
    assert letter.skip_reason == "ticket 12"


NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2h", datetime(2026, 12, 5, 4, 0, tzinfo=UTC)),
        ("90m", datetime(2026, 12, 5, 4, 30, tzinfo=UTC)),
        ("1d", datetime(2026, 12, 4, 6, 0, tzinfo=UTC)),
        ("PT30M", datetime(2026, 12, 5, 5, 30, tzinfo=UTC)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:15:00", datetime(2026, 12, 1, 10, 15, tzinfo=UTC)),
        ("2026-12-01T10:15:00Z", datetime(2026, 12, 1, 10, 15, tzinfo=UTC)),
        ("2026-12-01T11:15:00+01:00", datetime(2026, 12, 1, 10, 15, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_or_a_duration_ago(text: str, when: datetime) -> None:
    assert parse_when(text, NOW) == int(when.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "5", "", "2026-13-01"])
def test_other_times_are_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_when(text, NOW)


def test_filters() -> None:
    letter = read()  # route ledger, error "400: bad", the original's time
    time = RECORD.timestamp
    assert Filter().excludes(letter) is None
    assert Filter(route="ledger").excludes(letter) is None
    assert Filter(route="other").excludes(letter) == "route 'ledger' is not 'other'"
    assert Filter(reason=re.compile("^400")).excludes(letter) is None
    assert Filter(reason=re.compile("404")).excludes(letter) is not None
    assert Filter(since=time, until=time + 1).excludes(letter) is None
    assert Filter(since=time + 1).excludes(letter) == "older than --since"
    assert Filter(until=time).excludes(letter) == "not older than --until"


def test_planned_with_the_current_routes_and_the_original_idempotency_key() -> None:
    item = plan_letter(router(LEDGER), read())
    assert isinstance(item, Invocation)
    assert (item.service, item.key, item.body) == ("Ledger", "acct-7", b'{"n": 1}')
    # what the bridge sent for the original record
    (original,) = router(LEDGER).plan(RECORD)
    assert isinstance(original, Invocation)
    assert item.idempotency_key == original.idempotency_key == "orders-3-41:ledger"


def test_only_its_own_route_of_a_fan_out() -> None:
    other = LEDGER.replace('"ledger"', '"audit"').replace('"Ledger"', '"Audit"')
    item = plan_letter(router(LEDGER + other), read())
    assert isinstance(item, Invocation)
    assert item.route == "ledger"


def test_a_route_that_is_gone_or_no_longer_takes_it_still_fails() -> None:
    gone = LEDGER.replace('"ledger"', '"renamed"')
    assert plan_letter(router(gone), read()) == "route 'ledger' is no longer in the routing file"
    moved = LEDGER.replace('topic = "orders"', 'topic = "payments"')
    assert plan_letter(router(moved), read()) == (
        "route 'ledger' no longer takes this record (its topic or match changed)"
    )


def test_a_poison_still_fails_with_its_reason() -> None:
    templated = LEDGER.replace('key = "{key}"', 'key = "{value.customer}"')
    reason = plan_letter(router(templated), read())
    assert isinstance(reason, str)
    assert "value.customer" in reason


def test_a_tombstone_the_route_now_skips() -> None:
    skips = LEDGER + 'on_null = "skip"\n'
    assert plan_letter(router(skips), read(Record("orders", 0, 1, 0, b"k", None))) == Skip("ledger")


def test_a_batch_routes_record_goes_as_a_batch_of_one_with_its_single_key() -> None:
    batch = (
        '[[routes]]\nname = "ledger"\ntopic = "orders"\ntarget = "service"\nservice = "Ledger"\n'
        'handler = "many"\nbatch = { max_records = 10 }\n'
    )
    item = plan_letter(router(batch), read())
    assert isinstance(item, Invocation)
    assert item.idempotency_key == "orders-3-41-41:ledger"
    assert item.body is not None
    assert item.body.startswith(b'[{"topic":"orders"')


def test_the_summary() -> None:
    summary = Summary(sent=3, previously_accepted=1, still_failing=2, filtered=4)
    assert summary.handled == 10
    assert summary.line() == ("3 sent, 1 previously accepted, 2 still failing, 4 skipped by filter")
    summary.skipped_by_route = 1
    assert summary.line().endswith(", 1 skipped by their route")


def test_a_dry_run_counts_what_it_would_send() -> None:
    assert Summary(sent=2).line(dry_run=True).startswith("2 would be sent, 0 previously")
