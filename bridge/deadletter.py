"""The dead-letter topic: records that can never succeed, with the reason in their headers."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from .record import Record

ERROR_HEADER = "bridge.error"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that went to the dead-letter topic, for which route, and why."""

    record: Record
    route: str
    reason: str


def dead_letter_headers(record: Record, route: str, reason: str) -> list[tuple[str, bytes]]:
    """The original headers plus ``bridge.error``, ``.route``, ``.topic``, ``.partition``,
    ``.offset``."""
    return [
        *record.headers,
        (ERROR_HEADER, reason.encode()),
        ("bridge.route", route.encode()),
        ("bridge.topic", record.topic.encode()),
        ("bridge.partition", str(record.partition).encode()),
        ("bridge.offset", str(record.offset).encode()),
    ]


class DeadLetterSink:
    """Produces to ``topic`` with acks from all in-sync replicas; the caller retries failures."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, record: Record, route: str, reason: str) -> None:
        await self._producer.send_and_wait(
            self.topic,
            value=record.value,
            key=record.key,
            headers=dead_letter_headers(record, route, reason),
        )
