"""Routes checked against the live Restate: ``restate-bridge check --restate-admin URL``.

Reads what Restate has registered (its admin API) and, where Kafka answers, how long each routed
topic keeps its records; :mod:`bridge.core.deployments` judges. A route the ingress would refuse
(no such service or handler, the wrong kind, a private handler) is a problem; a topic that keeps
records longer than Restate remembers their idempotency keys is a warning: a replay of the older
records (an offset reset, a restore) would run them again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from ..config import BridgeConfig, ingress_ssl_context
from ..consume.kafka import kafka_options
from ..consume.oauth import kafka_login
from ..core.deployments import (
    DeployedService,
    ServicesError,
    dedup_window,
    describe,
    read_services,
    route_problems,
)
from ..core.nodes import node_label
from ..ingress import AdminClient, IngressError

FOREVER = timedelta.max
"""A topic that never deletes records: ``retention.ms = -1``, or compacted."""
KAFKA_TIMEOUT = 10.0


class AdminUnreachable(Exception):
    """The admin API could not be read: nothing was checked."""


@dataclass
class Verdict:
    """What ``check`` prints: ``PATH:LINE: message`` problems and warnings, and notes."""

    services: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def fetch_services(config: BridgeConfig, admin_url: str) -> dict[str, DeployedService]:
    """The services registered in Restate; :class:`AdminUnreachable` says why not."""
    restate = config.restate
    tls = ingress_ssl_context(restate) if admin_url.startswith("https://") else None
    shown = node_label(admin_url)
    try:
        async with AdminClient(admin_url, token=restate.admin_token, ssl_context=tls) as admin:
            listing = await admin.services()
        return read_services(listing)
    except (IngressError, ServicesError) as exc:
        raise AdminUnreachable(f"Restate admin API at {shown}: {exc}") from exc


async def check_against_restate(config: BridgeConfig, admin_url: str) -> Verdict:
    """Every route against Restate's registry, and the topics' retention against Restate's."""
    services = await fetch_services(config, admin_url)
    verdict = Verdict(services=len(services))
    path = config.path
    for route in config.routes:
        for problem in route_problems(
            route.name, route.target, route.service, route.handler, services
        ):
            verdict.problems.append(f"{path}:{route.line}: {problem}")
    topics = sorted({t for r in config.routes for t in r.topics})
    try:
        kept = await topic_retention(config, topics)
    except Exception as exc:  # any failure of an optional look-up: say so, check the rest
        verdict.notes.append(f"topic retention not compared: Kafka: {type(exc).__name__}: {exc}")
        kept = {}
    for route in config.routes:
        window = dedup_window(route.service, route.handler, services)
        if window is None:
            continue
        for topic in route.topics:
            retention = kept.get(topic)
            if retention is None:
                continue
            if retention > window:
                keeps = "forever" if retention == FOREVER else f"for {describe(retention)}"
                verdict.warnings.append(
                    f"{path}:{route.line}: route {route.name!r}: Restate remembers "
                    f"{route.service!r}'s idempotency keys for {describe(window)}, but topic "
                    f"{topic!r} keeps records {keeps}: a record older than {describe(window)} "
                    "that is read again (an offset reset, a restore) runs again"
                )
    unknown = [t for t in topics if t not in kept]
    if unknown and not verdict.notes:
        listed = ", ".join(repr(t) for t in unknown)
        verdict.notes.append(f"topic retention not compared for {listed}: the broker did not say")
    if any(r.topic_pattern is not None for r in config.routes):
        verdict.notes.append("routes with a topic_pattern: their topics' retention not compared")
    return verdict


async def topic_retention(config: BridgeConfig, topics: list[str]) -> dict[str, timedelta]:
    """How long Kafka keeps each topic's records (``FOREVER`` for ``retention.ms = -1`` or a
    compacted topic); a topic the broker says nothing of is left out."""
    if not topics:
        return {}
    async with kafka_login(config.kafka, KAFKA_TIMEOUT) as login:
        options = kafka_options(config.kafka, login)
        admin = AIOKafkaAdminClient(**options, request_timeout_ms=10_000)
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT):
                await admin.start()
                answers = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, t, None) for t in topics]
                )
        finally:
            await admin.close()
    kept: dict[str, timedelta] = {}
    for answer in answers:
        for resource in answer.resources:
            retention = retention_of(resource)
            if retention is not None:
                kept[resource[3]] = retention
    return kept


def retention_of(resource: Any) -> timedelta | None:
    """A DescribeConfigs resource ``(error, message, type, name, [(key, value, ...), ...])``
    read as a retention; ``None`` for an error or no ``retention.ms``."""
    error, _, _, _, entries = resource[:5]
    if error:
        return None
    values = {entry[0]: entry[1] for entry in entries}
    if "compact" in str(values.get("cleanup.policy") or "").split(","):
        return FOREVER
    raw = values.get("retention.ms")
    try:
        millis = int(raw) if raw is not None else None
    except ValueError:
        return None
    if millis is None:
        return None
    return FOREVER if millis < 0 else timedelta(milliseconds=millis)
