"""Reply records: a handler's result (or its terminal error), produced to a route's reply topic.

For every record a reply route accepted, one reply record: the source record's key, the
handler's output bytes as the value (empty for a terminal error), and these headers:

    bridge.status           ok | error
    bridge.invocation_id    inv_..., the invocation the result belongs to
    bridge.topic, bridge.partition, bridge.offset
                            where the source record was
    <correlation header>    copied from the source record, when the route names one it has
    bridge.error_code       error only: the handler's error code (or the HTTP status)
    bridge.error            error only: the handler's message

The message is pure (:func:`reply_message`); :class:`ReplySink` produces it. The sink never lets
the producer create a reply topic: a topic that does not exist is :class:`ReplyTopicMissing`
(retried by the dispatcher, visibly), not a topic auto-created with the broker's defaults.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core.record import Record
from .deadletter import Producer

STATUS_HEADER = "bridge.status"
INVOCATION_ID_HEADER = "bridge.invocation_id"
ERROR_CODE_HEADER = "bridge.error_code"
ERROR_HEADER = "bridge.error"


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The handler returned ``output`` (its bytes as the ingress returned them)."""

    output: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler failed terminally."""

    code: int | None
    message: str


Result = Succeeded | Failed


@dataclass(frozen=True, slots=True)
class Reply:
    """The reply to ``record`` for one invocation."""

    record: Record
    topic: str
    invocation_id: str
    result: Result
    correlation_header: str | None = None

    @property
    def coordinates(self) -> str:
        rec = self.record
        return f"{rec.topic}-{rec.partition}@{rec.offset}"


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def reply_message(reply: Reply) -> ReplyMessage:
    """The reply record: the source key, the output (or ``b""``), the ``bridge.*`` headers."""
    rec = reply.record
    result = reply.result
    headers = [
        (STATUS_HEADER, b"ok" if isinstance(result, Succeeded) else b"error"),
        (INVOCATION_ID_HEADER, reply.invocation_id.encode()),
        ("bridge.topic", rec.topic.encode()),
        ("bridge.partition", str(rec.partition).encode()),
        ("bridge.offset", str(rec.offset).encode()),
    ]
    if reply.correlation_header is not None:
        correlation = rec.header(reply.correlation_header)
        if correlation is not None:
            headers.append((reply.correlation_header, correlation))
    if isinstance(result, Failed):
        code = "" if result.code is None else str(result.code)
        headers.append((ERROR_CODE_HEADER, code.encode()))
        headers.append((ERROR_HEADER, result.message.encode()))
        return ReplyMessage(rec.key, b"", headers)
    return ReplyMessage(rec.key, result.output, headers)


class ReplyTopicMissing(Exception):
    """The reply topic does not exist; the bridge does not create it."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"reply topic {topic!r} does not exist; create it (the bridge retries, nothing is lost)"
        )
        self.topic = topic


class ReplySink:
    """Produces replies (the producer is created with acks from all in-sync replicas).

    ``topics`` answers the set of topics the cluster has; asked before the first reply to a
    topic, and again while that topic is missing.
    """

    def __init__(self, producer: Producer, topics: Callable[[], Awaitable[set[str]]]) -> None:
        self._producer = producer
        self._topics = topics
        self._known: set[str] = set()

    async def send(self, reply: Reply) -> None:
        if reply.topic not in self._known:
            if reply.topic not in await self._topics():
                raise ReplyTopicMissing(reply.topic)
            self._known.add(reply.topic)
        msg = reply_message(reply)
        await self._producer.send_and_wait(
            reply.topic, value=msg.value, key=msg.key, headers=msg.headers
        )
