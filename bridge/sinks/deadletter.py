"""The dead-letter topic: records that can never succeed, with the reason in their headers.

The same encoding carries a record the operator skipped to a topic of their choosing (see
:mod:`bridge.core.controls`): ``bridge.error`` says why it was blocked, ``bridge.skip_reason``
why the operator let it go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..core.record import Record

ERROR_HEADER = "bridge.error"
VALUE_DROPPED_HEADER = "bridge.value_dropped"
"""Why the dead letter carries no value (the broker refused the record with it)."""
ORIGINAL_VALUE_SIZE_HEADER = "bridge.original_value_size"
"""The size in bytes of the value that was dropped."""
SKIP_REASON_HEADER = "bridge.skip_reason"
"""The operator's reason, on a record skipped by a release of its blocked partition."""
VALUE_NULL_HEADER = "bridge.value_null"
"""``true`` when the original record had neither key nor value: its dead letter's value is ``b""``
(Kafka needs one of the two), and this header says the original value was null."""
TIMESTAMP_HEADER = "bridge.timestamp"
"""The original record's timestamp (ms since the epoch); the dead letter's own is when it was
written."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that can never succeed for ``route``, and why."""

    record: Record
    route: str
    reason: str
    skip_reason: str | None = None
    """Set when the operator skipped the record (a release), not the bridge."""

    @property
    def coordinates(self) -> str:
        """``topic-partition@offset``, as every log line about one record names it."""
        return self.record.coordinates


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """What is produced to the dead-letter topic for one :class:`DeadLetter`."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_headers(
    record: Record, route: str, reason: str, skip_reason: str | None = None
) -> list[tuple[str, bytes]]:
    """The original headers plus ``bridge.error``, ``.route``, ``.topic``, ``.partition``,
    ``.offset``, ``.timestamp`` (the original record's, in ms; left out when it has none) and
    ``bridge.skip_reason`` for a record the operator skipped. ``redrive`` reads them back."""
    headers = [
        *record.headers,
        (ERROR_HEADER, reason.encode()),
        ("bridge.route", route.encode()),
        ("bridge.topic", record.topic.encode()),
        ("bridge.partition", str(record.partition).encode()),
        ("bridge.offset", str(record.offset).encode()),
    ]
    if record.timestamp is not None and record.timestamp > 0:  # as Record.age: 0, -1 are none
        # the dead letter's own timestamp is when it was dead-lettered; redrive --since reads this
        headers.append((TIMESTAMP_HEADER, str(record.timestamp).encode()))
    if skip_reason is not None:
        headers.append((SKIP_REASON_HEADER, skip_reason.encode()))
    return headers


def dead_letter_message(letter: DeadLetter, *, drop_value: str | None = None) -> DeadLetterMessage:
    """The record's key, value and headers plus the ``bridge.*`` headers.

    ``drop_value`` (why) leaves the value out and says so in ``bridge.value_dropped``, with the
    original size in ``bridge.original_value_size``. A Kafka record needs a key or a value: one
    with neither gets the value ``b""`` and ``bridge.value_null: true``.
    """
    rec = letter.record
    headers = dead_letter_headers(rec, letter.route, letter.reason, letter.skip_reason)
    value = rec.value
    if drop_value is not None:
        size = 0 if value is None else len(value)
        headers.append((ORIGINAL_VALUE_SIZE_HEADER, str(size).encode()))
        headers.append((VALUE_DROPPED_HEADER, drop_value.encode()))
        value = None
    if rec.key is None and value is None:
        if rec.value is None:
            headers.append((VALUE_NULL_HEADER, b"true"))
        value = b""
    return DeadLetterMessage(rec.key, value, headers)


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the sink uses."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...


class DeadLetterSink:
    """Produces to ``topic`` (the producer is created with acks from all in-sync replicas); the
    caller decides what to do with failures
    (:func:`bridge.deliver.decisions.after_dead_letter_failure`)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, letter: DeadLetter, *, drop_value: str | None = None) -> None:
        msg = dead_letter_message(letter, drop_value=drop_value)
        await self._producer.send_and_wait(
            self.topic, value=msg.value, key=msg.key, headers=msg.headers
        )
