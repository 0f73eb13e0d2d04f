"""Tracing without I/O: the ``trace_context`` route key and the ``[tracing]`` table, what routes
forward, and the spans :mod:`bridge.tracing.spans` makes (with the SDK's in-memory exporter)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.config import BridgeConfig, ConfigError, parse_config
from bridge.core.record import Record
from bridge.core.routing import Invocation, Poison, Router
from bridge.ingress import ConnectError
from bridge.tracing.spans import RecordTracer

PATH = Path("routes.toml")
KAFKA = '[kafka]\nbootstrap_servers = "b:9092"\n'
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def parse(text: str) -> BridgeConfig:
    return parse_config(text, PATH, {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def service(extra: str = "") -> str:
    """A service route from line 4 on; ``extra`` from line 8."""
    return (
        f'{KAFKA}\n[[routes]]\ntopic = "orders"\ntarget = "service"\nservice = "S"\n'
        f'handler = "h"\n{extra}'
    )


def record(*headers: tuple[str, bytes]) -> Record:
    return Record("orders", 2, 17, 0, b"k", b"{}", tuple(headers))


def one(config: BridgeConfig, rec: Record) -> Invocation:
    (planned,) = Router(config).plan(rec)
    assert isinstance(planned, Invocation), planned
    return planned


# -- config ------------------------------------------------------------------------------------


def test_defaults() -> None:
    config = parse(service())
    assert config.routes[0].trace_context is True
    assert config.tracing.spans is False


def test_keys_read() -> None:
    config = parse("[tracing]\nspans = true\n" + service("trace_context = false\n"))
    assert config.routes[0].trace_context is False
    assert config.tracing.spans is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (service('trace_context = "yes"\n'), "routes.toml:9: trace_context must be true or false"),
        (
            "[tracing]\nspans = 1\n" + service(),
            "routes.toml:2: spans must be true or false",
        ),
        (
            "[tracing]\nspan = true\n" + service(),
            "routes.toml:2: unknown key 'span' in [tracing]; did you mean 'spans'?",
        ),
        (
            service("batch = { max_records = 10 }\ntrace_context = true\n"),
            "routes.toml:10: trace_context does not apply to a batch route: each item carries all "
            "its record's headers, trace headers included; remove trace_context",
        ),
    ],
)
def test_mistakes_at_their_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_spans_without_the_extra_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.tracing.missing_extra", lambda: "opentelemetry-api")
    assert problems("[tracing]\nspans = true\n" + service()) == [
        "routes.toml:2: spans = true needs opentelemetry-api, which is not installed: "
        "pip install 'restate-kafka-bridge[otel]'"
    ]
    parse("[tracing]\nspans = false\n" + service())  # off: nothing is needed


# -- what a route forwards ---------------------------------------------------------------------


def test_trace_headers_are_forwarded_by_default() -> None:
    inv = one(parse(service()), record(("traceparent", TP.encode()), ("tracestate", b"congo=1")))
    assert inv.headers == {"traceparent": TP, "tracestate": "congo=1"}
    assert inv.trace_dropped == ()


def test_trace_headers_go_with_the_listed_ones() -> None:
    config = parse(service('headers = ["x-tenant"]\n'))
    inv = one(config, record(("x-tenant", b"t1"), ("traceparent", TP.encode())))
    assert inv.headers == {"x-tenant": "t1", "traceparent": TP}


def test_trace_context_false_forwards_none() -> None:
    config = parse(service("trace_context = false\n"))
    assert one(config, record(("traceparent", TP.encode()))).headers == {}


def test_trace_context_false_and_listed_is_an_ordinary_header() -> None:
    config = parse(service('trace_context = false\nheaders = ["traceparent"]\n'))
    assert one(config, record(("traceparent", b"any text"))).headers == {"traceparent": "any text"}


@pytest.mark.parametrize("listed", ["", 'headers = ["traceparent", "tracestate"]\n'])
def test_an_invalid_trace_header_is_dropped_never_poison(listed: str) -> None:
    config = parse(service(listed))
    rec = record(("traceparent", b"00-zz\r\nx-injected: 1"), ("tracestate", b"congo=1"))
    inv = one(config, rec)
    assert inv.headers == {}
    assert inv.trace_dropped == (
        "traceparent is not VERSION-TRACEID-PARENTID-FLAGS in lower-case hex (2-32-16-2 digits)",
        "tracestate comes without a valid traceparent",
    )


def test_a_batch_route_sends_no_trace_headers() -> None:
    config = parse(service("batch = { max_records = 10 }\n"))
    inv = one(config, record(("traceparent", TP.encode())))
    assert inv.headers == {}
    assert inv.trace_dropped == ()


def test_a_poison_stays_a_poison_with_trace_headers() -> None:
    config = parse(service('body = "{value.missing}"\n'))
    (planned,) = Router(config).plan(record(("traceparent", TP.encode())))
    assert isinstance(planned, Poison)


# -- spans ---------------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> RecordTracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RecordTracer("group-1", provider.get_tracer("test"))


def test_a_record_span_joins_the_records_trace(
    tracer: RecordTracer, exporter: InMemorySpanExporter
) -> None:
    span = tracer.start(record(), "rec", {"traceparent": TP, "tracestate": "congo=1"})
    first = span.send("http://restate:8080/Recorder/k/record/send", 0)
    first.failed(ConnectError("POST /Recorder/k/record/send: connection refused"))
    second = span.send("http://restate:8080/Recorder/k/record/send", 1)
    headers = second.headers({"x-tenant": "t1", "traceparent": TP, "tracestate": "congo=1"})
    second.answered(202)
    span.accepted(duplicate=False)
    span.abandoned()  # the first end wins

    attempt1, attempt2, consumer = exporter.get_finished_spans()
    assert consumer.name == "process orders"
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == TRACE_ID
    assert consumer.parent is not None
    assert consumer.parent.span_id == 0xB7AD6B7169203331
    assert consumer.context.trace_state.to_header() == "congo=1"
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 17,
        "messaging.consumer.group.name": "group-1",
        "restate.bridge.route": "rec",
        "restate.bridge.outcome": "accepted",
    }
    assert consumer.status.status_code is StatusCode.UNSET
    for attempt in (attempt1, attempt2):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.name == "POST"
        assert attempt.parent is not None
        assert attempt.parent.span_id == consumer.context.span_id
        assert attempt.context.trace_id == TRACE_ID
    assert dict(attempt1.attributes or {}) == {
        "http.request.method": "POST",
        "url.full": "http://restate:8080/Recorder/k/record/send",
        "server.address": "restate",
        "server.port": 8080,
        "error.type": "connect",
    }
    assert attempt1.status.status_code is StatusCode.ERROR
    assert (attempt2.attributes or {})["http.request.resend_count"] == 1
    assert (attempt2.attributes or {})["http.response.status_code"] == 202
    # what goes to Restate: the attempt's own context, the trace's state, the other headers
    assert headers == {
        "x-tenant": "t1",
        "traceparent": f"00-{TRACE_ID:032x}-{attempt2.context.span_id:016x}-01",
        "tracestate": "congo=1",
    }


def test_without_a_traceparent_a_record_starts_a_trace(
    tracer: RecordTracer, exporter: InMemorySpanExporter
) -> None:
    span = tracer.start(record(), "rec", {})
    span.failed("dead_lettered", "ingress answered 400: bad input")
    (consumer,) = exporter.get_finished_spans()
    assert consumer.parent is None
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.status.description == "ingress answered 400: bad input"
    assert (consumer.attributes or {})["restate.bridge.outcome"] == "dead_lettered"


def test_an_attempt_span_shows_no_credentials(
    tracer: RecordTracer, exporter: InMemorySpanExporter
) -> None:
    span = tracer.start(record(), "rec", {})
    span.send("https://bridge:s3cret@restate:8443/S/h/send?delay=4s", 0).answered(202)
    span.accepted(duplicate=True)
    attempt, consumer = exporter.get_finished_spans()
    assert (attempt.attributes or {})["url.full"] == "https://restate:8443/S/h/send?delay=4s"
    assert "s3cret" not in str(attempt.attributes)
    assert (consumer.attributes or {})["restate.bridge.outcome"] == "duplicate"
