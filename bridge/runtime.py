"""Wiring: every part the running bridge needs, started in order on one exit stack.

Start order (the stack closes them in reverse)::

    status server -> ingress clients (+ health probe, token file) -> attach clients (reply
    routes) -> schema registry decoder -> Kafka login (OAUTHBEARER's first token) -> Kafka
    security check -> producer (dead letters and replies) -> delivery (the dispatcher) ->
    Restate's registry read (with an admin_url) -> consumer

:func:`open_runtime` returns a :class:`Runtime` only once all of it is up: no part is ever half
made. The parts that live as long as the process (the partition book, the operator's controls,
the status server, metrics) are made by :class:`bridge.worker.Bridge` and passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import BridgeConfig, ingress_ssl_context
from .consume.book import PartitionBook
from .consume.kafka import KafkaRefused, check_security
from .consume.loop import KafkaSide
from .consume.oauth import OAuthLogin, TokenRefused
from .consume.port import ConsumerFactory, ConsumerPort, LazyProducer, cluster_topics
from .consume.routes import RoutesInForce
from .core.controls import Controls
from .deliver.dispatcher import Dispatcher
from .deliver.health import IngressHealth
from .ingress import Client
from .operate.metrics import Metrics
from .operate.registry_watch import RegistryWatch, Waits
from .operate.server import StatusServer
from .schemas.setup import open_decoder
from .secrets import TokenFile
from .sinks.deadletter import DeadLetterSink
from .sinks.parking import Parking
from .sinks.replies import ReplySink

if TYPE_CHECKING:
    from .tracing.spans import RecordTracer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """What lives as long as the process, made before the runtime."""

    routes: RoutesInForce
    metrics: Metrics
    health: IngressHealth
    book: PartitionBook
    controls: Controls
    status: StatusServer
    producer: LazyProducer
    parking: Parking
    token: str | None
    consumer_factory: ConsumerFactory
    clock: Callable[[], float]
    registry: RegistryWatch | None = None
    login: OAuthLogin | None = None


@dataclass(frozen=True)
class Runtime:
    """The running bridge's parts; closed by the exit stack :func:`open_runtime` was given."""

    delivery: Dispatcher
    kafka: KafkaSide
    consumer: ConsumerPort
    replies: bool
    """Reply routes can run: the attach clients and the reply producer were made."""


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _clients(
    config: BridgeConfig, parts: Parts, stack: contextlib.AsyncExitStack
) -> tuple[list[Client], list[Client]]:
    """One ingress client per node (and, with reply routes, an attach client per node), the
    health probe and the token file's watch."""
    restate = config.restate

    async def client(url: str, timeout: float | None, connections: int) -> Client:
        made = Client(
            url,
            token=parts.token,
            timeout=timeout,
            max_connections=connections,
            ssl_context=ingress_ssl_context(restate),
        )
        return await stack.enter_async_context(made)

    timeout = restate.request_timeout.total_seconds()
    clients = [await client(url, timeout, restate.max_connections) for url in restate.ingress_urls]
    attach: list[Client] = []
    if any(r.reply_topic for r in config.routes):
        # waiting for results holds connections for as long as a handler runs: a pool of
        # their own, so that waiting replies never take the connections sends need
        waiting = config.delivery.max_waiting_replies
        attach = [await client(url, None, waiting) for url in restate.ingress_urls]
    if restate.token_file is not None:
        every = [*clients, *attach]

        def set_token(token: str | None) -> None:
            for each in every:
                each.set_token(token)

        token_file = TokenFile(restate.token_file, set_token, current=parts.token)
        stack.push_async_callback(_cancel, asyncio.create_task(token_file.watch_forever()))
    probe = asyncio.create_task(parts.health.probe_forever(clients))
    stack.push_async_callback(_cancel, probe)
    return clients, attach


async def _sinks(
    config: BridgeConfig, producer: LazyProducer, *, replies: bool
) -> tuple[DeadLetterSink | None, ReplySink | None]:
    """The dead-letter and reply producers the routes need (they share one producer)."""
    if not (config.dead_letter.topic or replies):
        return None, None
    started = await producer.get()
    dead_letters = None
    if config.dead_letter.topic:
        dead_letters = DeadLetterSink(started, config.dead_letter.topic)
    return dead_letters, ReplySink(started, lambda: cluster_topics(started)) if replies else None


def _tracer(config: BridgeConfig) -> RecordTracer | None:
    if not config.tracing.spans:
        return None
    from .tracing.spans import RecordTracer  # `check` made sure the otel extra is installed

    return RecordTracer(config.kafka.group_id)


async def _watch_registry(registry: RegistryWatch | None, stack: contextlib.AsyncExitStack) -> None:
    """Judge the routes against Restate's registry before the first record is planned, then
    keep watching it."""
    if registry is not None:
        await registry.refresh()
        stack.push_async_callback(_cancel, asyncio.create_task(registry.watch_forever()))


def _bearer(login: OAuthLogin | None) -> Callable[[], Awaitable[str]] | None:
    """The Kafka login's token, for a schema registry with ``kafka_oauth_token``."""
    return None if login is None else login.token


async def _log_in(
    login: OAuthLogin | None, config: BridgeConfig, stack: contextlib.AsyncExitStack
) -> None:
    """``OAUTHBEARER``: the first token, before any Kafka connection; a token endpoint that is
    down is waited for (``/readyz`` says why), a refusal for good is a :class:`KafkaRefused`."""
    if login is None:
        return
    try:
        await login.start()
    except TokenRefused as exc:
        raise KafkaRefused(config.kafka.bootstrap_servers, f"OAUTHBEARER: {exc}") from None
    stack.push_async_callback(login.aclose)


async def open_runtime(
    parts: Parts,
    stack: contextlib.AsyncExitStack,
    on_refused: Callable[[KafkaRefused], None],
) -> Runtime:
    """Start every part in order (module docstring); ``stack`` closes them in reverse.
    ``on_refused`` hears a refused TLS handshake or SASL login before it is raised."""
    config = parts.routes.config
    await parts.status.start()
    stack.push_async_callback(parts.status.stop)
    clients, attach = await _clients(config, parts, stack)
    decoder = await open_decoder(config, parts.metrics, stack, _bearer(parts.login))
    try:  # a refused TLS handshake or SASL login is fatal: say why, once, before any retry
        await _log_in(parts.login, config, stack)
        await check_security(config.kafka, parts.login)
    except KafkaRefused as exc:
        on_refused(exc)
        raise
    stack.push_async_callback(parts.producer.aclose)
    dead_letters, replies = await _sinks(config, parts.producer, replies=bool(attach))
    tracer = _tracer(config)
    delivery = Dispatcher(
        client=clients,
        metrics=parts.metrics,
        health=parts.health,
        delivery=config.delivery,
        outcomes=parts.book,
        pauses=Waits(parts.controls, parts.registry),
        dead_letters=dead_letters,
        request_timeout=config.restate.request_timeout.total_seconds(),
        replies=replies,
        attach_client=attach or None,
        tracer=tracer,
    )
    stack.push_async_callback(delivery.aclose)
    stack.callback(parts.book.end_all)
    delivery.configure_routes(config.routes)
    await _watch_registry(parts.registry, stack)
    consumer = parts.consumer_factory(config)
    kafka = KafkaSide(
        consumer=consumer,
        book=parts.book,
        delivery=delivery,
        routes=parts.routes,
        controls=parts.controls,
        parking=parts.parking,
        metrics=parts.metrics,
        health=parts.health,
        clock=parts.clock,
        decoder=decoder,
        windows=parts.registry,
    )
    consumer.subscribe(config, kafka)
    stack.push_async_callback(consumer.stop)
    await consumer.start()
    topics = config.topic_pattern or list(config.topics)
    log.info("consuming %s as group %s", topics, config.kafka.group_id)
    return Runtime(delivery, kafka, consumer, replies=bool(attach))
