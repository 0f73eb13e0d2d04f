"""``restate-bridge redrive``: the dead letters of a routing file's dead-letter topic, sent again
with the current routes, each under the idempotency key its original record had.

The topic is read up to the ends it has when the run starts (a dead letter written later waits
for the next run), with a consumer group of its own, one dead letter at a time in the topic's
order (so the records of one key go in their order). A dead letter's offset is committed once it
is decided: sent (accepted or previously accepted), left out by a filter, or reported as still
failing; so an interrupted run resumes where it stopped, and whatever it had sent but not yet
committed answers ``PreviouslyAccepted`` the second time instead of running again.

Nothing is ever produced: what still fails (unreadable, a poison for the current routes, a 4xx
the ingress refuses) is reported and stays where it is. A retryable failure (a connection error,
a timeout, a 5xx, 429) is retried a few times with backoff; then the run stops, its offset not
committed (:class:`RedriveStopped`).

The ends come from the high watermarks of the first Fetch answers (the last stable offsets with
``read_committed``), not from ListOffsets, which tansu answers wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ..config import BridgeConfig
from ..consume.kafka import check_security, kafka_options
from ..consume.oauth import OAuthLogin
from ..core.backoff import Backoff
from ..core.record import Record, coordinates
from ..core.redrive import Filter, Letter, Summary, Unreadable, plan_letter, read_letter
from ..core.routing import Invocation, Router, Skip
from ..ingress import NO_INPUT, Client, IngressError, SendReceipt

SEND_ATTEMPTS = 5
"""Tries of one send that fails in a retryable way before the run stops."""
BACKOFF = Backoff(initial=0.5, maximum=8.0)
FETCH_TIMEOUT = 30.0
"""Seconds the topic may stay silent (no answer, no record) before the run gives up."""

Decode = Callable[[Record], Awaitable[Record | str]]
"""Decodes a record's framed key and value (a route reads ``avro``, ...): the record, or why the
schema registry could not be asked."""


class RedriveStopped(Exception):
    """The run stopped before the end: what it had decided is committed, nothing after."""


@dataclass(frozen=True, slots=True)
class Options:
    """What ``redrive``'s arguments ask for."""

    filter: Filter = field(default_factory=Filter)
    dry_run: bool = False
    """Print what would be sent; send and commit nothing."""
    limit: int | None = None
    """Handle at most this many dead letters."""
    group_id: str | None = None
    """The consumer group (default ``<[kafka] group_id>.redrive``)."""
    from_start: bool = False
    """Read from the topic's beginning, whatever the group has committed."""


def group_of(config: BridgeConfig, options: Options) -> str:
    """The consumer group a run reads with."""
    return options.group_id or f"{config.kafka.group_id}.redrive"


class Report(Protocol):
    """What a run tells its operator, as it goes."""

    def would_send(self, where: str, letter: Letter, item: Invocation) -> None:
        """``--dry-run``: ``item`` would be sent for the dead letter at ``where``."""

    def failing(self, where: str, letter: Letter | None, reason: str) -> None:
        """The dead letter at ``where`` still fails, and stays where it is."""

    def progress(self, summary: Summary, total: int | None) -> None:
        """After each dead letter; ``total``: how many the run reads at most, once known."""


async def partitions_of(
    config: BridgeConfig, topic: str, login: OAuthLogin | None = None
) -> list[int]:
    """The partitions of ``topic``, from a metadata request for every topic (naming the topic
    could create it on a broker with ``auto.create.topics.enable``); ``[]`` when it does not
    exist. (A consumer's own metadata need not hold a topic it has not been assigned yet.)"""
    admin = AIOKafkaAdminClient(**kafka_options(config.kafka, login), request_timeout_ms=10_000)
    try:
        await admin.start()
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for answer in described:
        if answer["topic"] == topic and not answer["error_code"]:
            return sorted(p["partition"] for p in answer["partitions"])
    return []


class LetterTopic:
    """The dead-letter topic read by one consumer of the redrive group, up to its ends at the
    start; offsets committed one by one."""

    def __init__(
        self, config: BridgeConfig, topic: str, options: Options, login: OAuthLogin | None = None
    ) -> None:
        self._config = config
        self.topic = topic
        self._from_start = options.from_start
        self._login = login
        self._consumer = AIOKafkaConsumer(
            **kafka_options(config.kafka, login),
            group_id=group_of(config, options),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=config.kafka.isolation_level,
        )
        self._partitions: list[KafkaTopicPartition] = []
        self._ends: dict[KafkaTopicPartition, int] = {}
        self._starts: dict[KafkaTopicPartition, int] = {}

    async def open(self) -> None:
        """Connect (``KafkaRefused`` for a refused security), take every partition of the topic
        and start each where the group stopped (or at the beginning)."""
        await check_security(self._config.kafka, self._login)
        numbers = await partitions_of(self._config, self.topic, self._login)
        if not numbers:
            raise RedriveStopped(f"the dead-letter topic {self.topic!r} does not exist")
        consumer = self._consumer
        await consumer.start()
        self._partitions = [KafkaTopicPartition(self.topic, n) for n in numbers]
        consumer.assign(self._partitions)
        for tp in self._partitions:
            committed = None if self._from_start else await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            self._starts[tp] = await consumer.position(tp)

    async def close(self) -> None:
        await self._consumer.stop()

    @property
    def total(self) -> int | None:
        """How many offsets lie between the starts and the ends, once every end is known."""
        if len(self._ends) < len(self._partitions):
            return None
        return sum(max(0, self._ends[tp] - self._starts[tp]) for tp in self._partitions)

    async def commit(self, partition: int, offset: int) -> None:
        """The dead letter at ``offset`` is decided: the group resumes after it."""
        tp = KafkaTopicPartition(self.topic, partition)
        await self._consumer.commit({tp: offset + 1})

    async def letters(self) -> AsyncGenerator[Any, None]:
        """Every record up to the ends, each partition in offset order."""
        consumer = self._consumer
        done: set[KafkaTopicPartition] = set()
        quiet_since = time.monotonic()
        while len(done) < len(self._partitions):
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            learned = self._learn_ends()
            if batches or learned:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > FETCH_TIMEOUT:
                waiting = sorted(tp.partition for tp in self._partitions if tp not in done)
                raise RedriveStopped(
                    f"Kafka answered no fetch of {self.topic!r} partitions {waiting} "
                    f"in {FETCH_TIMEOUT:.0f} s"
                )
            for tp, records in sorted(batches.items()):
                end = self._ends.get(tp)
                if end is None:  # records come with their high watermark: never here
                    raise RedriveStopped(f"{tp.topic}-{tp.partition}: no high watermark known")
                for record in records:
                    if record.offset < end:
                        yield record
            for tp, end in self._ends.items():
                if tp not in done and await consumer.position(tp) >= end:
                    done.add(tp)
                    consumer.pause(tp)

    def _learn_ends(self) -> bool:
        consumer, learned = self._consumer, False
        committed_only = self._config.kafka.isolation_level == "read_committed"
        for tp in self._partitions:
            if tp in self._ends:
                continue
            end = consumer.last_stable_offset(tp) if committed_only else None
            if end is None:
                end = consumer.highwater(tp)
            if end is not None:
                self._ends[tp] = end
                learned = True
        return learned


class Redrive:
    """One run: read, decide, send, commit; one dead letter at a time."""

    def __init__(
        self,
        config: BridgeConfig,
        options: Options,
        clients: Sequence[Client],
        report: Report,
        summary: Summary,
        decode: Decode | None = None,
        login: OAuthLogin | None = None,
    ) -> None:
        assert config.dead_letter.topic is not None
        self._topic = LetterTopic(config, config.dead_letter.topic, options, login)
        self._options = options
        self._router = Router(config)
        self._clients = clients
        self._report = report
        self.summary = summary
        self._decode = decode

    async def run(self) -> Summary:
        """Until the ends, the limit, or a failure that stops it (:class:`RedriveStopped`)."""
        topic, limit = self._topic, self._options.limit
        try:
            await topic.open()
            if limit == 0:
                return self.summary
            async with contextlib.aclosing(topic.letters()) as letters:
                async for message in letters:
                    await self._handle(message)
                    if not self._options.dry_run:
                        await topic.commit(message.partition, message.offset)
                    self._report.progress(self.summary, topic.total)
                    if limit is not None and self.summary.handled >= limit:
                        break
        finally:
            await topic.close()
        return self.summary

    async def _handle(self, message: Any) -> None:
        """Decide one dead letter and count it."""
        summary = self.summary
        where = coordinates(message.topic, message.partition, message.offset)
        letter = read_letter(message.key, message.value, message.headers or (), message.timestamp)
        if isinstance(letter, Unreadable):
            self._failing(where, None, letter.reason)
            return
        if self._options.filter.excludes(letter) is not None:
            summary.filtered += 1
            return
        letter = await self._decoded(where, letter)
        item = plan_letter(self._router, letter)
        if isinstance(item, str):
            self._failing(where, letter, item)
        elif isinstance(item, Skip):
            summary.skipped_by_route += 1
        elif self._options.dry_run:
            self._report.would_send(where, letter, item)
            summary.sent += 1
        else:
            sent = await self._send(where, item)
            if isinstance(sent, str):
                self._failing(where, letter, sent)
            elif sent.duplicate:
                summary.previously_accepted += 1
            else:
                summary.sent += 1

    def _failing(self, where: str, letter: Letter | None, reason: str) -> None:
        self.summary.still_failing += 1
        self._report.failing(where, letter, reason)

    async def _decoded(self, where: str, letter: Letter) -> Letter:
        if self._decode is None:
            return letter
        decoded = await self._decode(letter.record)
        if isinstance(decoded, str):
            raise RedriveStopped(f"{where}: {decoded}")
        return Letter(decoded, letter.route, letter.error, letter.skip_reason)

    async def _send(self, where: str, item: Invocation) -> SendReceipt | str:
        """The receipt, or why the ingress refuses it for good; :class:`RedriveStopped` once a
        retryable failure has lasted ``SEND_ATTEMPTS`` tries (spread over the nodes)."""
        for attempt in range(SEND_ATTEMPTS):
            client = self._clients[attempt % len(self._clients)]
            try:
                return await item.target(client).send(
                    NO_INPUT if item.body is None else item.body,
                    content_type=item.content_type,
                    delay=item.delay,
                    idempotency_key=item.idempotency_key,
                    headers=item.headers,
                    limit_key=item.limit_key,
                )
            except IngressError as exc:
                if not exc.retryable:
                    return f"the ingress refused it: {exc}"
                if attempt + 1 == SEND_ATTEMPTS:
                    raise RedriveStopped(
                        f"{where}: the ingress at {client.url} failed {SEND_ATTEMPTS} times, "
                        f"last: {exc}"
                    ) from exc
                await asyncio.sleep(BACKOFF.delay(attempt, exc.retry_after))
        raise AssertionError("unreachable")
