"""bridge.sinks.deadletter: what a dead letter looks like on the topic (headers, dropped values,
records
with neither key nor value), produced through a fake producer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.core.record import Record
from bridge.sinks.deadletter import DeadLetter, DeadLetterSink, dead_letter_message

RECORD = Record("orders", 3, 41, 1_700_000_000_000, b"acct-7", b'{"n": 1}', (("trace", b"t-1"),))

BRIDGE_HEADERS = [
    ("bridge.error", b"ingress answered 400: bad"),
    ("bridge.route", b"Ledger.append"),
    ("bridge.topic", b"orders"),
    ("bridge.partition", b"3"),
    ("bridge.offset", b"41"),
    ("bridge.timestamp", b"1700000000000"),
]


@dataclass
class FakeProducer:
    """Records what ``send_and_wait`` got; the interface the sink uses."""

    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})


def letter(record: Record = RECORD) -> DeadLetter:
    return DeadLetter(record, "Ledger.append", "ingress answered 400: bad")


def test_the_original_record_plus_the_bridge_headers_in_order() -> None:
    msg = dead_letter_message(letter())
    assert (msg.key, msg.value) == (b"acct-7", b'{"n": 1}')
    assert msg.headers == [("trace", b"t-1"), *BRIDGE_HEADERS]


def test_dropping_the_value_says_why_and_how_big_it_was() -> None:
    msg = dead_letter_message(letter(), drop_value="too large: MessageSizeTooLargeError")
    assert (msg.key, msg.value) == (b"acct-7", None)
    assert msg.headers == [
        ("trace", b"t-1"),
        *BRIDGE_HEADERS,
        ("bridge.original_value_size", b"8"),
        ("bridge.value_dropped", b"too large: MessageSizeTooLargeError"),
    ]


def test_a_record_with_neither_key_nor_value_gets_an_empty_value_and_says_so() -> None:
    rec = Record("orders", 3, 41, 0, None, None)
    msg = dead_letter_message(letter(rec))
    assert (msg.key, msg.value) == (None, b"")
    # a timestamp of 0 is none (as Kafka's -1): no bridge.timestamp
    assert msg.headers == [*BRIDGE_HEADERS[:-1], ("bridge.value_null", b"true")]


def test_a_keyless_record_whose_value_is_dropped_still_has_a_value() -> None:
    rec = Record("orders", 3, 41, 0, None, b"x" * 100)
    msg = dead_letter_message(letter(rec), drop_value="too large")
    assert (msg.key, msg.value) == (None, b"")
    names = [name for name, _ in msg.headers]
    assert "bridge.value_null" not in names  # the value was not null: it was dropped
    assert dict(msg.headers)["bridge.original_value_size"] == b"100"


@pytest.mark.parametrize(
    ("key", "value"), [(b"k", None), (None, b"v"), (b"k", b"v"), (None, None), (b"", b"")]
)
@pytest.mark.parametrize("drop_value", [None, "too large"])
def test_every_dead_letter_has_a_key_or_a_value(
    key: bytes | None, value: bytes | None, drop_value: str | None
) -> None:
    msg = dead_letter_message(letter(Record("t", 0, 0, 0, key, value)), drop_value=drop_value)
    assert msg.key is not None or msg.value is not None


def test_coordinates() -> None:
    assert letter().coordinates == "orders-3@41"


async def test_the_sink_produces_the_message_to_its_topic() -> None:
    producer = FakeProducer()
    sink = DeadLetterSink(producer, "dlq")
    await sink.send(letter())
    await sink.send(letter(Record("orders", 3, 42, 0, None, None)), drop_value="refused")
    assert producer.sent == [
        {
            "topic": "dlq",
            "key": b"acct-7",
            "value": b'{"n": 1}',
            "headers": [("trace", b"t-1"), *BRIDGE_HEADERS],
        },
        {
            "topic": "dlq",
            "key": None,
            "value": b"",
            "headers": [
                *BRIDGE_HEADERS[:4],
                ("bridge.offset", b"42"),
                ("bridge.original_value_size", b"0"),
                ("bridge.value_dropped", b"refused"),
                ("bridge.value_null", b"true"),
            ],
        },
    ]
