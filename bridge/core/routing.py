"""From a record to the invocations it produces: topic and content matching, templates, fan-out.

Pure: no I/O. Whatever bytes a record holds, :meth:`Router.plan` returns, per matching route, an
:class:`Invocation` the ingress client can send as it is, a :class:`Poison` saying which field is
unusable and why (for the dead-letter topic), or a :class:`Skip` (a tombstone the route skips). It
never raises: an unexpected error while planning one route is a poison too, logged with the
record's coordinates.

Every value taken from a record is checked before it becomes part of a request:

- object key / workflow id: non-empty text of at most :data:`MAX_KEY_BYTES` UTF-8 bytes;
- idempotency key: printable ASCII (Restate answers 400 to any other header value), at most
  :data:`MAX_IDEMPOTENCY_KEY` characters;
- delay: a duration (``4s``, ``PT2S``) no longer than ``[delivery] max_delay``;
- forwarded headers: a name that is an HTTP token and not one the bridge sets itself
  (:func:`bridge.core.record.reserved_header`), a value of visible ASCII, spaces and tabs of at most
  :data:`MAX_HEADER_VALUE` bytes;
- body: JSON sub-documents are re-encoded exactly (integers beyond 64 bits included).

W3C trace context (``traceparent``, ``tracestate``) is forwarded by every route with
``trace_context = true`` (the default), listed in ``headers`` or not; a trace header that breaks
the W3C rules is left out and named in :attr:`Invocation.trace_dropped`, never a poison
(:mod:`bridge.core.tracecontext`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..config import BatchConfig, BridgeConfig, Match, RouteConfig, TargetKind
from .batching import encode_item
from .durations import DurationError, format_duration, parse_duration
from .record import (
    DecodeError,
    FieldError,
    Record,
    RecordView,
    as_text,
    dump_json,
    excerpt,
    header_value_ok,
    http_token,
    reserved_header,
)
from .scopes import limit_key_problem, scope_problem
from .template import Template
from .tracecontext import NONE as NO_TRACE_HEADERS
from .tracecontext import TRACE_HEADERS, trace_headers

if TYPE_CHECKING:  # the client only builds the target: routing itself does no I/O
    from ..ingress import Client, Target

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 4096
"""The longest object key or workflow id, in UTF-8 bytes. Restate keeps the key in every
invocation's id, state and journal, and the percent-encoded key (up to three times as long) travels
in the request line, which HTTP servers and proxies bound (commonly at 8-16 KiB). Keys longer than
this are almost always a template pointing at the wrong field."""
MAX_IDEMPOTENCY_KEY = 1024
"""The longest idempotency key (ASCII characters, the route name included): a header value kept by
Restate for every invocation for its retention time."""
MAX_HEADER_VALUE = 8192
"""The longest forwarded header value in bytes; HTTP servers commonly refuse longer fields."""


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where the result of an invocation goes (a route with ``reply_topic``)."""

    topic: str
    correlation_header: str | None
    max_wait: float
    """Seconds to wait for the result after Restate accepted the invocation."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """One ``/send`` the bridge will make for one record and one route."""

    route: str
    kind: TargetKind
    service: str
    handler: str
    key: str | None
    body: bytes | None
    content_type: str | None
    delay: timedelta | None
    idempotency_key: str | None
    headers: dict[str, str] = field(default_factory=dict)
    lane: tuple[Any, ...] | None = None
    """Invocations with the same lane are sent one after another, in offset order."""
    reply: ReplyTo | None = None
    """Produce the result to a reply topic; the record finishes only once the reply is written."""
    batch: BatchConfig | None = None
    """A batch route's: ``body`` is the record's JSON item, sent with others in one invocation
    (:mod:`bridge.core.batching`)."""
    scope: str | None = None
    """The Restate scope the invocation runs in (a route's ``scope``)."""
    limit_key: str | None = None
    """Sent as ``x-restate-limit-key`` (a route's ``limit_key``); only with ``scope``."""
    trace_dropped: tuple[str, ...] = ()
    """Trace headers of the record left out because they break the W3C rules, one reason each
    (the worker counts and logs them; tracing never costs a record)."""

    def target(self, client: Client) -> Target:
        """The handler this invocation goes to, built by ``client``."""
        if self.key is None:
            return client.service(self.service, self.handler, scope=self.scope)
        if self.kind == "workflow":
            return client.workflow(self.service, self.key, self.handler, scope=self.scope)
        return client.object(self.service, self.key, self.handler, scope=self.scope)


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can never become an invocation of ``route``, and why."""

    route: str
    reason: str
    held: Invocation | None = None
    """Not sent by a route's rule (``max_record_age`` with ``on_record_too_old = "block"``): the
    record holds its partition, in its lane, and an operator's ``retry`` sends this after all."""


@dataclass(frozen=True, slots=True)
class Skip:
    """A record ``route`` matched but does not send: a tombstone with ``on_null = "skip"``."""

    route: str


Planned = Invocation | Poison | Skip

TOMBSTONE_DEAD_LETTER = (
    'the record has a null value (a tombstone) and the route says on_null = "dead_letter"'
)


class Route:
    """A compiled :class:`RouteConfig`."""

    __slots__ = (
        "_forwarded",
        "_header_problems",
        "_json_matches",
        "_plain_matches",
        "_reply",
        "_trace_context",
        "config",
        "max_delay",
        "name",
    )

    def __init__(
        self,
        config: RouteConfig,
        max_delay: timedelta,
        reply_timeout: timedelta = timedelta(minutes=5),
    ) -> None:
        self.config = config
        self.name = config.name
        self.max_delay = max_delay
        self._reply: ReplyTo | None = None
        if config.reply_topic is not None:
            wait = config.reply_timeout or reply_timeout
            self._reply = ReplyTo(
                config.reply_topic, config.reply_correlation_header, wait.total_seconds()
            )
        # entries that need no JSON first: a record another entry rules out is not poison here
        self._plain_matches = tuple(m for m in config.match if not m.field.needs_json)
        self._json_matches = tuple(m for m in config.match if m.field.needs_json)
        # `check` refuses these names; a routing file that skipped it still never sends them
        self._header_problems = {
            name: problem for name in config.headers if (problem := _header_name_problem(name))
        }
        # a batch sends each record's headers inside its item, never as request headers
        self._trace_context = config.trace_context and config.batch is None
        # with trace_context, the trace headers follow the W3C rules even when listed in headers
        self._forwarded = tuple(
            name for name in config.headers if not (self._trace_context and name in TRACE_HEADERS)
        )

    def plan(self, view: RecordView) -> Planned | None:
        """What this route does with the record; ``None`` when it does not match.

        Raises :class:`FieldError` or :class:`DurationError` with the reason for a poison.
        """
        view = view.formatted(self.config.value_format, self.config.key_format)
        if self._plain_matches and not all(_equals(view, m) for m in self._plain_matches):
            return None
        on_null = self.config.on_null
        if view.record.value is None and on_null != "send":
            # a tombstone has no JSON to compare `value.*` entries with: the policy decides
            if on_null == "skip":
                return Skip(self.name)
            return Poison(self.name, TOMBSTONE_DEAD_LETTER)
        view.check_decoded()  # a framed key or value that cannot be read is poison here
        if self._json_matches and not all(_equals(view, m) for m in self._json_matches):
            return None
        return self.invocation(view)

    def matches(self, view: RecordView) -> bool:
        """True when every ``match`` entry equals; a missing header or key does not match.

        Raises :class:`FieldError` when a ``value.*`` entry needs JSON and the value is not JSON.
        """
        view = view.formatted(self.config.value_format, self.config.key_format)
        return all(_equals(view, m) for m in (*self._plain_matches, *self._json_matches))

    def invocation(self, view: RecordView) -> Invocation:
        """Raises :class:`FieldError` or :class:`DurationError` with the reason."""
        c = self.config
        rec = view.record
        key = None if c.key is None else _key(c.key, c.target, view)
        delay = self._delay(view)
        headers = self._headers(rec)
        trace = trace_headers(rec.headers) if self._trace_context else NO_TRACE_HEADERS
        if trace.headers:
            headers.update(trace.headers)
        if c.batch is None:
            body, content_type = _body(c, view)
        else:
            body, content_type = encode_item(view), "application/json"
        scope = None if c.scope is None else _scoped("scope", c.scope, view, scope_problem)
        limit_key = None
        if c.limit_key is not None:
            limit_key = _scoped("limit_key", c.limit_key, view, limit_key_problem)
        if c.ordering == "key":
            # one scope's object is not another's: their records need no common order
            lane: tuple[Any, ...] | None = (
                (c.service, key) if scope is None else (c.service, key, scope)
            )
        elif c.ordering == "partition":
            lane = (c.name, rec.topic, rec.partition)
        else:
            lane = None
        idem = None
        if c.idempotency_key is not None:
            # the route name keeps fan-out invocations of one record apart
            idem = _idempotency_key(c.idempotency_key, c.name, view)
        return Invocation(
            route=c.name,
            kind=c.target,
            service=c.service,
            handler=c.handler,
            key=key,
            body=body,
            content_type=content_type,
            delay=delay or None,
            idempotency_key=idem,
            headers=headers,
            lane=lane,
            reply=self._reply,
            batch=c.batch,
            scope=scope,
            limit_key=limit_key,
            trace_dropped=trace.dropped,
        )

    def _delay(self, view: RecordView) -> timedelta | None:
        spec = self.config.delay
        if spec is None:
            return None
        if isinstance(spec, timedelta):
            delay = spec
        else:
            try:
                delay = parse_duration(spec.render(view))
            except DurationError as exc:
                raise DurationError(f"delay: {exc}") from None
        if delay > self.max_delay:
            longest = format_duration(self.max_delay)
            raise DurationError(f"delay {format_duration(delay)} exceeds max_delay {longest}")
        return delay

    def _headers(self, rec: Record) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name in self._forwarded:
            raw = rec.header(name)
            if raw is None:
                continue
            problem = self._header_problems.get(name)
            if problem is not None:
                raise FieldError(f"header {name!r} {problem}")
            headers[name] = _header_value(name, raw)
        return headers


def _header_name_problem(name: str) -> str | None:
    if not http_token(name):
        return "cannot be forwarded: it is not a valid HTTP header name"
    if reserved_header(name):
        return "cannot be forwarded: the bridge or HTTP sets it, a record may not"
    return None


def _header_value(name: str, raw: bytes) -> str:
    if len(raw) > MAX_HEADER_VALUE:
        raise FieldError(
            f"header {name!r} is {len(raw)} bytes long; a forwarded header may have at most "
            f"{MAX_HEADER_VALUE}"
        )
    text = as_text(raw, f"header {name!r}")
    if not header_value_ok(text):
        what = "non-ASCII text" if not text.isascii() else "a control character"
        raise FieldError(
            f"header {name!r} holds {what}, which an HTTP header sent to Restate cannot carry: "
            f"{excerpt(text)}"
        )
    return text


def _key(template: Template, kind: TargetKind, view: RecordView) -> str:
    key = template.render(view)
    what = "workflow id" if kind == "workflow" else "object key"
    if not key:
        raise FieldError(f"the key template {template.source!r} rendered an empty key")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise FieldError(
            f"the key template {template.source!r} rendered a {what} that is not valid Unicode"
        ) from None
    if size > MAX_KEY_BYTES:
        raise FieldError(
            f"the key template {template.source!r} rendered a {what} of {size} bytes; "
            f"the limit is {MAX_KEY_BYTES} bytes of UTF-8"
        )
    return key


def _scoped(
    option: str, template: Template, view: RecordView, problem: Callable[[str], str | None]
) -> str:
    """A rendered ``scope`` or ``limit_key``, checked by Restate's rules
    (:mod:`bridge.core.scopes`)."""
    text = template.render(view)
    wrong = problem(text)
    if wrong is not None:
        raise FieldError(
            f"the {option} template {template.source!r} rendered an unusable value: {wrong}"
        )
    return text


def _idempotency_key(template: Template, route: str, view: RecordView) -> str:
    idem = f"{template.render(view)}:{route}"
    if not (idem.isascii() and idem.isprintable()):
        hint = "; use {key.hex} or {key.base64} for keys" if "key" in template.source else ""
        raise FieldError(
            f"the idempotency_key template {template.source!r} rendered {excerpt(idem)}, which "
            f"is not printable ASCII (Restate refuses other header values){hint}"
        )
    if len(idem) > MAX_IDEMPOTENCY_KEY:
        raise FieldError(
            f"the idempotency_key template {template.source!r} rendered {len(idem)} characters; "
            f"the limit is {MAX_IDEMPOTENCY_KEY}"
        )
    return idem


def _equals(view: RecordView, match: Match) -> bool:
    try:
        actual = view.get(match.field)
    except DecodeError:
        raise
    except FieldError:
        if match.field.needs_json:
            view.json()  # a value that is not JSON is poison, not a mismatch
        return False
    expected = match.expected
    if isinstance(actual, bytes):
        try:
            actual = actual.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    if isinstance(actual, str):  # a key or header: compare with the text form (true, 5, 1.5)
        return actual == as_text(expected, match.field.text)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    return bool(actual == expected)


def _body(c: RouteConfig, view: RecordView) -> tuple[bytes | None, str | None]:
    kind = c.body.kind
    if kind == "none":
        return None, None
    if kind == "value":
        value = view.body()
        if value is None:
            return None, None
        return value, _content_type(c)
    assert c.body.template is not None
    if kind == "json_field":
        field_path = c.body.template.single_field
        assert field_path is not None
        return dump_json(view.get(field_path), f"body field {field_path.text!r}"), _content_type(c)
    return dump_json(c.body.template.render(view), "body"), _content_type(c)


def _content_type(c: RouteConfig) -> str:
    # `check` refuses such a content_type; a routing file that skipped it cannot break a request
    if not c.content_type or not header_value_ok(c.content_type):
        raise FieldError(f"content_type {excerpt(c.content_type)} is not a legal header value")
    return c.content_type


class Router:
    """All routes of a config; caches which routes listen to which topic."""

    def __init__(self, config: BridgeConfig) -> None:
        delivery = config.delivery
        self.routes = tuple(
            Route(r, delivery.max_delay, delivery.reply_timeout) for r in config.routes
        )
        self._by_topic: dict[str, tuple[Route, ...]] = {}

    def routes_for(self, topic: str) -> tuple[Route, ...]:
        found = self._by_topic.get(topic)
        if found is None:
            found = tuple(r for r in self.routes if r.config.matches_topic(topic))
            self._by_topic[topic] = found
        return found

    def plan(self, record: Record) -> list[Planned]:
        """One invocation, poison or skip per matching route; empty when unrouted. Never raises."""
        view = RecordView(record)
        out: list[Planned] = []
        for route in self.routes_for(record.topic):
            try:
                planned = route.plan(view)
            except (FieldError, DurationError) as exc:
                planned = Poison(route.name, str(exc))
            except Exception as exc:  # a bug here must cost one record, not the partition
                log.exception(
                    "%s: route %s: internal error while planning", record.coordinates, route.name
                )
                planned = Poison(
                    route.name, f"internal error while planning: {type(exc).__name__}: {exc}"
                )
            if planned is not None:
                out.append(planned)
        return out
