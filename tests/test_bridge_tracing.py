"""Tracing end to end, on both brokers, against the real Restate 1.7.12.

- W3C trace headers of a record reach the handler, and Restate joins the trace: its
  ``sys_invocation.trace_id`` is the record's trace id (Restate keeps the ``traceparent`` of the
  ``/send`` as the parent of its ingress span, also without a tracing exporter of its own, and
  passes both headers on to the handler). An invalid header is dropped and counted, the record is
  delivered all the same.
- With ``[tracing] spans = true`` (the bridge in-process, the SDK's in-memory exporter as the
  global provider's): a consumer span per record and route with a client span per attempt, the
  attempt's context is what Restate's trace hangs under.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.config import parse_config
from bridge.ingress import Client
from bridge.worker import Bridge
from tests.helpers import recorded, route, unique, until
from tests.stack.bridge_process import BridgeFactory, routes_toml
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{PARENT}-01"
TRACE2 = "5bf92f3577b34da6a3ce929d0e0e4737"


def headers_recorder(topic: str, name: str, key: str, **fields: object) -> str:
    """A route to ``Recorder/recordHeaders`` of object ``key``: it keeps each input and the
    request headers it came with."""
    return route(
        name=name,
        topic=topic,
        target="object",
        service="Recorder",
        handler="recordHeaders",
        key=key,
        **fields,
    )


def trace_ids(restate: RestateServer, key: str) -> dict[str, str | None]:
    """``{idempotency key: trace_id}`` of the Recorder invocations of object ``key``."""
    rows = restate.query(
        "SELECT idempotency_key, trace_id FROM sys_invocation "
        f"WHERE target_service_name = 'Recorder' AND target_service_key = '{key}'"
    )
    return {row["idempotency_key"]: row.get("trace_id") for row in rows}


async def test_trace_headers_reach_restate_and_the_handler(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    topic, key, untraced = unique("traced"), unique("tk"), unique("tk-off")
    await create_topics(broker.bootstrap_servers, [topic])
    bridge = bridges.start(
        headers_recorder(topic, "rec", key)
        + headers_recorder(topic, "off", untraced, trace_context=False),
        group_id=unique("g"),
    )
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(b"k", b'{"n": 0}', [("traceparent", TP.encode()), ("tracestate", b"congo=1")]),
            Message(
                b"k",
                b'{"n": 1}',
                [
                    ("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01"),
                    ("tracestate", b"congo=2"),
                ],
            ),
            Message(b"k", b'{"n": 2}', [("traceparent", b"00-zz\xff")]),
            Message(b"k", b'{"n": 3}'),
            # sampled, with Level 2's random flag: Restate would ignore "03", so it gets "01"
            Message(b"k", b'{"n": 4}', [("traceparent", f"00-{TRACE2}-{PARENT}-03".encode())]),
        ],
    )
    seen = await until(recorded(client, key), lambda got: len(got) == 5, "5 records", 60)
    assert [entry["value"] for entry in seen] == [{"n": i} for i in range(5)]
    headers = [entry["headers"] for entry in seen]
    assert headers[0]["traceparent"] == TP
    assert headers[0]["tracestate"] == "congo=1"
    assert headers[4]["traceparent"] == f"00-{TRACE2}-{PARENT}-01"
    for dropped in headers[1:4]:
        assert "traceparent" not in dropped, dropped
        assert "tracestate" not in dropped, dropped
    off = await until(recorded(client, untraced), lambda got: len(got) == 5, "5 records", 60)
    assert all("traceparent" not in entry["headers"] for entry in off)

    ids = trace_ids(restate, key)
    assert ids[f"{topic}-0-0:rec"] == TRACE  # Restate joined the record's trace
    assert [ids[f"{topic}-0-{offset}:rec"] for offset in (1, 2, 3)] == [None, None, None]
    assert ids[f"{topic}-0-4:rec"] == TRACE2
    assert set(trace_ids(restate, untraced).values()) == {None}

    # all zeros + its tracestate, not ASCII: dropped, counted, never a dead letter
    assert bridge.value("restate_bridge_trace_context_dropped_total", route="rec") == 3
    assert bridge.value("restate_bridge_trace_context_dropped_total", route="off") == 0
    assert bridge.value("restate_bridge_messages_total", route="rec", outcome="accepted") == 5


# -- spans, with the bridge in-process ---------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter on the global tracer provider, as a user would set it up."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the global provider can be set only once
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    found = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(found))
    yield found
    found.shutdown()


def spans_of(exporter: InMemorySpanExporter, topic: str) -> dict[int, list[ReadableSpan]]:
    """Per offset of ``topic``: its consumer span first, then its attempts in start order."""
    finished = exporter.get_finished_spans()
    consumers = {
        s.context.span_id: s
        for s in finished
        if s.kind is SpanKind.CONSUMER
        and (s.attributes or {}).get("messaging.destination.name") == topic
    }
    out: dict[int, list[ReadableSpan]] = {}
    for span_id, consumer in consumers.items():
        attempts = [s for s in finished if s.parent is not None and s.parent.span_id == span_id]
        offset = int((consumer.attributes or {})["messaging.kafka.offset"])  # type: ignore[arg-type]
        out[offset] = [consumer, *sorted(attempts, key=lambda s: s.start_time or 0)]
    return out


async def test_spans_per_record_and_attempt(
    broker: Broker,
    client: Client,
    restate: RestateServer,
    proxy: IngressProxy,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    topic, dlq, key = unique("spans"), unique("spans-dlq"), unique("sk")
    group = unique("g")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    proxy.refuse = 1  # the first send is answered 503: retried, a second attempt span
    text = routes_toml(
        bootstrap=broker.bootstrap_servers,
        ingress_url=proxy.url,
        group_id=group,
        metrics_port=0,
        dead_letter_topic=dlq,
        routes="[tracing]\nspans = true\n"
        + headers_recorder(topic, "rec", key, body="{value.doc}"),
    )
    bridge = Bridge(parse_config(text, tmp_path / "routes.toml", {}))
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(
                b"k", b'{"doc": 0}', [("traceparent", TP.encode()), ("tracestate", b"congo=1")]
            ),
            Message(b"k", b'{"doc": 1}'),
            Message(b"k", b"not json"),  # poison: dead-lettered
        ],
    )
    stop = asyncio.Event()
    running = asyncio.create_task(bridge.run(stop))
    try:
        seen = await until(recorded(client, key), lambda got: len(got) == 2, "2 records", 60)
        await until(lambda: spans_of(exporter, topic), lambda s: len(s) == 3, "3 record spans")
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
    assert len(await read_topic(broker.bootstrap_servers, dlq, expect=1)) == 1
    spans = spans_of(exporter, topic)

    # offset 0: in the producer's trace; refused once, then accepted
    consumer, refused, accepted = spans[0]
    assert consumer.name == f"process {topic}"
    assert consumer.context.trace_id == int(TRACE, 16)
    assert consumer.parent is not None
    assert consumer.parent.span_id == int(PARENT, 16)
    attributes: dict[str, Any] = dict(consumer.attributes or {})
    assert attributes == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
        "messaging.consumer.group.name": group,
        "restate.bridge.route": "rec",
        "restate.bridge.outcome": "accepted",
    }
    assert consumer.status.status_code is StatusCode.UNSET
    url = f"{proxy.url}/Recorder/{key}/recordHeaders/send"
    assert refused.kind is SpanKind.CLIENT
    assert accepted.kind is SpanKind.CLIENT
    assert (refused.attributes or {})["url.full"] == url
    assert (refused.attributes or {})["http.response.status_code"] == 503
    assert (refused.attributes or {})["error.type"] == "http_5xx"
    assert refused.status.status_code is StatusCode.ERROR
    assert (accepted.attributes or {})["http.response.status_code"] == 202
    assert (accepted.attributes or {})["http.request.resend_count"] == 1
    assert consumer.start_time is not None
    assert accepted.end_time is not None
    assert consumer.start_time <= refused.start_time  # type: ignore[operator]
    assert accepted.end_time <= consumer.end_time  # type: ignore[operator]
    # what Restate and the handler got: the accepted attempt's context, the trace's state
    sent = f"00-{TRACE}-{accepted.context.span_id:016x}-01"
    assert seen[0]["headers"]["traceparent"] == sent
    assert seen[0]["headers"]["tracestate"] == "congo=1"
    ids = trace_ids(restate, key)
    assert ids[f"{topic}-0-0:rec"] == TRACE

    # offset 1: no traceparent, so the bridge starts the trace and Restate joins it
    consumer1, attempt1 = spans[1]
    assert consumer1.parent is None
    assert attempt1.context.trace_id == consumer1.context.trace_id
    own_trace = f"{consumer1.context.trace_id:032x}"
    sent1 = f"00-{own_trace}-{attempt1.context.span_id:016x}-01"  # sampled, nothing else
    assert seen[1]["headers"]["traceparent"] == sent1
    assert ids[f"{topic}-0-1:rec"] == own_trace

    # offset 2: dead-lettered without a send, its span says why
    (poisoned,) = spans[2]
    assert poisoned.status.status_code is StatusCode.ERROR
    assert (poisoned.status.description or "").startswith("the record value is not JSON")
    assert (poisoned.attributes or {})["restate.bridge.outcome"] == "dead_lettered"
    assert json.loads(json.dumps(seen))  # the handler's view is plain JSON
