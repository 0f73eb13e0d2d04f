"""One span per record and route, with a child per ``/send`` attempt (OpenTelemetry).

- ``process TOPIC`` (kind CONSUMER): from the moment the dispatcher takes the record until the
  ingress accepted it, it was dead-lettered or it blocked its partition (status ERROR with the
  reason), or its partition was revoked. Its parent is the record's valid ``traceparent`` (with
  ``tracestate``), so the bridge's spans join the producer's trace. Attributes after the messaging
  semantic conventions: ``messaging.system = kafka``, ``messaging.operation.type = process``,
  ``messaging.destination.name``, ``messaging.destination.partition.id``,
  ``messaging.kafka.offset``, ``messaging.consumer.group.name``; and ``restate.bridge.route``.
- ``POST`` (kind CLIENT), one per attempt: ``http.request.method``, ``url.full`` (without
  credentials), ``server.address``, ``server.port``, ``http.response.status_code``, and from the
  second attempt on ``http.request.resend_count``; a failure sets ``error.type`` and status
  ERROR. The ``traceparent`` sent to the ingress is this span's, so Restate's spans hang under it.

The tracer is the global one (``opentelemetry.trace.get_tracer``): exporters are configured with
the OpenTelemetry SDK as usual, before the bridge starts.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from ..core.nodes import node_label
from ..core.record import Record
from ..core.tracecontext import TRACEPARENT, for_restate
from ..ingress import IngressError

TRACER_NAME = "restate-kafka-bridge"


class RecordTracer:
    """Starts the spans of records consumed by ``group_id``."""

    def __init__(self, group_id: str, tracer: trace.Tracer | None = None) -> None:
        self._group_id = group_id
        self._tracer = tracer or trace.get_tracer(TRACER_NAME, __version__)
        self._propagator = TraceContextTextMapPropagator()

    def start(self, record: Record, route: str, headers: Mapping[str, str]) -> RecordSpan:
        """The span of ``record`` for ``route``; ``headers`` are the trace headers it forwards
        (validated): its parent, when they hold a ``traceparent``."""
        parent = self._propagator.extract(headers) if TRACEPARENT in headers else None
        span = self._tracer.start_span(
            f"process {record.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self._group_id,
                "restate.bridge.route": route,
            },
        )
        return RecordSpan(self._tracer, self._propagator, span)


class RecordSpan:
    """The span of one record and route; ended once, by the first of its ends."""

    __slots__ = ("_ended", "_propagator", "_span", "_tracer")

    def __init__(
        self, tracer: trace.Tracer, propagator: TraceContextTextMapPropagator, span: trace.Span
    ) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._span = span
        self._ended = False

    @property
    def span(self) -> trace.Span:
        return self._span

    def send(self, url: str, attempt: int) -> SendSpan:
        """A child span for one ``/send`` to ``url``; ``attempt`` counts the ones before it."""
        parts = urllib.parse.urlsplit(url)
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "url.full": node_label(url),  # never credentials, as the conventions ask
            "server.address": parts.hostname or "",
        }
        if parts.port is not None:
            attributes["server.port"] = parts.port
        if attempt:
            attributes["http.request.resend_count"] = attempt
        span = self._tracer.start_span(
            "POST",
            context=trace.set_span_in_context(self._span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return SendSpan(span, self._propagator)

    def accepted(self, duplicate: bool) -> None:
        """The ingress accepted the record (``duplicate``: it had before)."""
        self._end("duplicate" if duplicate else "accepted", None)

    def failed(self, outcome: str, reason: str) -> None:
        """The record was ``dead_lettered`` or ``blocked`` its partition, for ``reason``."""
        self._end(outcome, reason)

    def abandoned(self) -> None:
        """The record's partition was revoked (or the bridge stopped) before it finished: the
        next owner reads it again."""
        self._end("abandoned", None)

    def _end(self, outcome: str, reason: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._span.set_attribute("restate.bridge.outcome", outcome)
        if reason is not None:
            self._span.set_status(Status(StatusCode.ERROR, reason))
        self._span.end()


class SendSpan:
    """The span of one ``/send`` attempt."""

    __slots__ = ("_propagator", "_span")

    def __init__(self, span: trace.Span, propagator: TraceContextTextMapPropagator) -> None:
        self._span = span
        self._propagator = propagator

    @property
    def span(self) -> trace.Span:
        return self._span

    def headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        """``forwarded`` with this span's ``traceparent`` (and the trace's ``tracestate``)."""
        headers = dict(forwarded)
        self._propagator.inject(headers, context=trace.set_span_in_context(self._span))
        if TRACEPARENT in headers:  # the SDK may set the random-trace-id flag Restate refuses
            headers[TRACEPARENT] = for_restate(headers[TRACEPARENT])
        return headers

    def answered(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        self._span.end()

    def failed(self, error: BaseException) -> None:
        status = getattr(error, "status", None)
        if isinstance(status, int):
            self._span.set_attribute("http.response.status_code", status)
        kind = error.reason if isinstance(error, IngressError) else type(error).__name__
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR, str(error)))
        self._span.end()
