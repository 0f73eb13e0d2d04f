"""From a record to the invocations it produces: topic and content matching, templates, fan-out.

Pure: no I/O. A record that cannot be turned into an invocation (its value is not JSON, a key field
is missing, a delay is malformed) yields a :class:`Poison` with the reason, for the dead-letter
topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from .config import BridgeConfig, Match, RouteConfig, TargetKind
from .durations import DurationError, parse_duration
from .ingress import Client, Target
from .record import FieldError, Record, RecordView, as_text


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

    def target(self, client: Client) -> Target:
        """The handler this invocation goes to, built by ``client``."""
        if self.key is None:
            return client.service(self.service, self.handler)
        if self.kind == "workflow":
            return client.workflow(self.service, self.key, self.handler)
        return client.object(self.service, self.key, self.handler)


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can never become an invocation of ``route``, and why."""

    route: str
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A record ``route`` matched and deliberately does not send (``on_null = "skip"``)."""

    route: str


class Route:
    """A compiled :class:`RouteConfig`."""

    __slots__ = ("_needs_json", "config", "name")

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.name = config.name

    def matches(self, view: RecordView) -> bool:
        """True when every ``match`` entry equals; a missing header or key does not match.

        Raises :class:`FieldError` when a ``value.*`` entry needs JSON and the value is not JSON.
        """
        return all(_equals(view, m) for m in self.config.match)

    def invocation(self, view: RecordView) -> Invocation:
        """Raises :class:`FieldError` or :class:`DurationError` with the reason."""
        c = self.config
        rec = view.record
        key = None
        if c.key is not None:
            key = c.key.render(view)
            if not key:
                raise FieldError(f"the key template {c.key.source!r} rendered an empty key")
        delay: timedelta | None
        if c.delay is None or isinstance(c.delay, timedelta):
            delay = c.delay
        else:
            delay = parse_duration(c.delay.render(view))
        headers: dict[str, str] = {}
        for name in c.headers:
            raw = rec.header(name)
            if raw is not None:
                headers[name] = as_text(raw, f"header {name!r}")
        body, content_type = _body(c, view)
        if c.ordering == "key":
            lane: tuple[Any, ...] | None = (c.service, key)
        elif c.ordering == "partition":
            lane = (c.name, rec.topic, rec.partition)
        else:
            lane = None
        idem = None
        if c.idempotency_key is not None:
            # the route name keeps fan-out invocations of one record apart
            idem = f"{c.idempotency_key.render(view)}:{c.name}"
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
        )


def _equals(view: RecordView, match: Match) -> bool:
    try:
        actual = view.get(match.field)
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
        value = view.record.value
        return (None, None) if value is None else (value, c.content_type)
    assert c.body.template is not None
    if kind == "json_field":
        field_path = c.body.template.single_field
        assert field_path is not None
        return orjson.dumps(view.get(field_path)), c.content_type
    return orjson.dumps(c.body.template.render(view)), c.content_type


class Router:
    """All routes of a config; caches which routes listen to which topic."""

    def __init__(self, config: BridgeConfig) -> None:
        self.routes = tuple(Route(r) for r in config.routes)
        self._by_topic: dict[str, tuple[Route, ...]] = {}

    def routes_for(self, topic: str) -> tuple[Route, ...]:
        found = self._by_topic.get(topic)
        if found is None:
            found = tuple(r for r in self.routes if r.config.matches_topic(topic))
            self._by_topic[topic] = found
        return found

    def plan(self, record: Record) -> list[Invocation | Poison]:
        """The invocations (one per matching route) or poison verdicts; empty when unrouted."""
        view = RecordView(record)
        out: list[Invocation | Poison] = []
        for route in self.routes_for(record.topic):
            try:
                if route.matches(view):
                    out.append(route.invocation(view))
            except (FieldError, DurationError) as exc:
                out.append(Poison(route.name, str(exc)))
        return out
