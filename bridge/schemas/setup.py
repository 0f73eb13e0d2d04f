"""Building the decoding stage from the config: the registry client, its metrics and its
recovery task, each closed by the caller's exit stack."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from ..config import BridgeConfig, SchemaRegistryConfig
from ..core.backoff import Backoff
from ..core.record import FRAMED_FORMATS
from ..operate.metrics import Metrics
from .decoder import Decoder, route_formats
from .registry import RegistrySettings, SchemaRegistry

Bearer = Callable[[], Awaitable[str]]
"""A function giving the current bearer token (the Kafka login's ``token``)."""


def uses_registry(config: BridgeConfig) -> bool:
    """True when some route reads a framed key or value."""
    return any(
        r.value_format in FRAMED_FORMATS or r.key_format in FRAMED_FORMATS for r in config.routes
    )


def registry_settings(
    config: SchemaRegistryConfig, bearer: Bearer | None = None
) -> RegistrySettings:
    assert config.url is not None, "check refuses a framed format without [schema_registry] url"
    context = None
    if config.ca_file is not None:
        context = ssl.create_default_context(cafile=config.ca_file)
    return RegistrySettings(
        url=config.url,
        timeout=config.request_timeout.total_seconds(),
        username=config.username,
        password=config.password,
        token=config.token,
        ssl_context=context,
        validate_json=config.validate_json,
        bearer=bearer if config.kafka_oauth_token else None,
    )


def make_decoder(config: BridgeConfig, metrics: Metrics, bearer: Bearer | None = None) -> Decoder:
    """A decoder with a registry client that connects on first use (close ``.registry``);
    ``bearer``: the Kafka login's ``token``, which ``kafka_oauth_token`` sends to the registry."""
    requests = metrics.schema_registry_requests
    for result in ("ok", "not_found", "error"):
        requests.labels(result)
    registry = SchemaRegistry(
        registry_settings(config.schema_registry, bearer),
        on_request=lambda result: requests.labels(result).inc(),
    )
    failures = metrics.decode_failures
    delivery = config.delivery
    return Decoder(
        route_formats(config.routes),
        registry,
        on_failure=lambda *labels: failures.labels(*labels).inc(),
        on_cache_hit=metrics.schema_cache_hits.inc,
        on_state=lambda up: metrics.schema_registry_up.set(1 if up else 0),
        backoff=Backoff(delivery.retry_initial.total_seconds(), delivery.retry_max.total_seconds()),
    )


async def open_decoder(
    config: BridgeConfig,
    metrics: Metrics,
    stack: contextlib.AsyncExitStack,
    bearer: Bearer | None = None,
) -> Decoder | None:
    """The running decoding stage, or None when no route reads a framed format."""
    if not uses_registry(config):
        return None
    decoder = make_decoder(config, metrics, bearer)
    stack.push_async_callback(decoder.registry.aclose)
    task = asyncio.create_task(decoder.recover_forever())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
    return decoder
