"""``[[routes]]``: each entry read by small named rules, then rules across the whole file."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal, cast

from ..core.durations import DurationError, parse_duration
from ..core.record import FieldPath, http_token, reserved_header
from ..core.scopes import limit_key_problem, scope_problem
from ..core.status_policy import LIST_KEYS, StatusPolicy, overlap, parse_statuses
from ..core.template import Template, TemplateError
from .reading import Problems, closest, human, label, read_value, short, unknown_key
from .schema import (
    DEFAULT_IDEMPOTENCY_KEY,
    HINTS,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_BATCH_WAIT,
    MIN_BATCH_BYTES,
    ROUTE_KEYS,
    TARGETS,
    WORKFLOW_MAIN_HANDLERS,
    BatchConfig,
    Body,
    DeadLetterConfig,
    DeliveryConfig,
    Match,
    Ordering,
    Range,
    RouteConfig,
    TargetKind,
    parse_size,
    topic_name_problem,
)

# -- routes -----------------------------------------------------------------------------------


@dataclass
class _Route:
    """One ``[[routes]]`` entry while the rules read it into ``values`` (RouteConfig's fields)."""

    table: dict[str, Any]
    where: tuple[Any, ...]
    p: Problems
    values: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    workflow_main: bool = False
    """A workflow's main handler: no idempotency key, the workflow id is its idempotency."""
    meant: frozenset[str] = frozenset()
    """Keys a misspelt key of the table stands for (already said: "did you mean ...?")."""

    def problem(self, key: str | None, message: str) -> None:
        self.failed = True
        self.p.add((*self.where, key) if key else self.where, message)

    def template(self, key: str, source: Any) -> Template | None:
        if not isinstance(source, str) or not source:
            self.problem(key, f"{key!r} must be a non-empty template string")
            return None
        try:
            return Template.parse(source)
        except TemplateError as exc:
            self.problem(key, f"{key!r}: {exc}")
            return None

    def scalar(self, key: str, default: Any = None) -> Any:
        """Read ``key`` by RouteConfig's type hint for it; ``default`` when absent or wrong."""
        if key not in self.table:
            return default
        read, wrong = read_value(self.table[key], _ROUTE_HINTS[key], key)
        if wrong is not None:
            self.problem(key, wrong)
            return default
        return read

    @property
    def target(self) -> TargetKind | None:
        return cast(TargetKind | None, self.values.get("target"))


def read_routes(value: Any, problems: Problems) -> list[tuple[int, RouteConfig]]:
    if value is None:
        problems.add((), "no [[routes]]: add at least one route")
        return []
    if not isinstance(value, list):
        problems.add(("routes",), "routes must be an array of tables: [[routes]]")
        return []
    routes: list[tuple[int, RouteConfig]] = []
    names: dict[str, int] = {}
    seen: dict[str, tuple[int, int]] = {}
    reported: set[int] = set()
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name:
            if name in names:
                problems.add(
                    ("routes", index, "name"),
                    f"duplicate route name {name!r} (first at line {names[name]})",
                )
                reported.add(index)
            names.setdefault(name, problems.line("routes", index, "name"))
        route = _route(item, index, problems)
        if route is None:
            continue
        routes.append((index, route))
        first, seen_at = seen.setdefault(route.name, (index, route.line))
        if first != index and index not in reported:
            # default names (service.handler) must be unique too
            problems.add(
                ("routes", index),
                f"two routes are both called {route.name!r} (first at line {seen_at}); "
                "give them distinct names",
            )
    return routes


def _route(value: Any, index: int, problems: Problems) -> RouteConfig | None:
    where: tuple[Any, ...] = ("routes", index)
    if not isinstance(value, dict):
        problems.add(where, "each [[routes]] entry must be a table")
        return None
    meant: set[str] = set()  # keys a misspelt one stands for: not reported missing as well
    for key in value:
        if key not in ROUTE_KEYS:
            close = closest(key, ROUTE_KEYS)
            if close is not None:
                meant.add(close)
            problems.add((*where, key), unknown_key(key, label(where), ROUTE_KEYS, close))
    before = len(problems.items)
    route = _Route(value, where, problems, meant=frozenset(meant))
    for rule in _ROUTE_RULES:
        rule(route)
    if route.failed or len(problems.items) > before:
        return None
    values = route.values
    values.setdefault("name", f"{values['service']}.{values['handler']}")
    return RouteConfig(line=problems.line(*where), **values)


def _topic_source(r: _Route) -> None:
    """Exactly one of ``topic``, ``topics`` or ``topic_pattern``; names Kafka accepts."""
    given = [k for k in ("topic", "topics", "topic_pattern") if k in r.table]
    if len(given) != 1:
        if given or not r.meant & {"topic", "topics", "topic_pattern"}:
            r.problem(None, "a route needs exactly one of topic, topics or topic_pattern")
        else:
            r.failed = True  # a misspelt topic key, said already
        return
    raw = r.table[given[0]]
    if given[0] == "topic_pattern":
        r.values["topic_pattern"] = _pattern(r, raw)
        return
    if given[0] == "topic":
        if not isinstance(raw, str) or not raw:
            r.problem("topic", "'topic' must be a non-empty string")
            return
        raw = [raw]
    elif not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        r.problem("topics", "topics must be a non-empty list of topic names")
        return
    for topic in raw:
        wrong = topic_name_problem(topic)
        if wrong is not None:
            r.problem(given[0], f"{given[0]}: {wrong}")
    r.values["topics"] = tuple(raw)


def _pattern(r: _Route, raw: Any) -> re.Pattern[str] | None:
    if not isinstance(raw, str) or not raw:
        r.problem("topic_pattern", "'topic_pattern' must be a non-empty string")
        return None
    try:
        pattern = re.compile(raw)
        re.compile(f"(?:{raw})")  # how it is combined with the other routes' topics
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        r.problem("topic_pattern", f"bad topic_pattern regex: {exc}")
        return None
    return pattern


def _target(r: _Route) -> None:
    target = r.table.get("target")
    if target is None and "target" in r.meant:
        r.failed = True  # misspelt, said already
        return
    if target not in TARGETS:
        r.problem(
            "target" if "target" in r.table else None,
            f"target must be one of {', '.join(TARGETS)}, not {short(target)}",
        )
        return
    r.values["target"] = target


def _service_handler(r: _Route) -> None:
    for key in ("service", "handler"):
        value = r.table.get(key)
        if value is None and key in r.meant:
            r.failed = True  # misspelt, said already
        elif value is None:
            r.problem(None, f"{label(r.where)} needs {key!r}")
        elif not isinstance(value, str) or not value:
            r.problem(key, f"{key!r} must be a non-empty string")
        else:
            r.values[key] = value


def _key(r: _Route) -> None:
    """Objects and workflows need a key template; a service has none."""
    target = r.target
    if target is None:
        return  # reported by _target; a key cannot be judged without a target
    if target == "service":
        if "key" in r.table:
            r.problem(
                "key", "a service has no key; use target = 'object' or 'workflow', or remove 'key'"
            )
    elif "key" not in r.table and "key" in r.meant:
        r.failed = True  # misspelt, said already
    elif "key" not in r.table:
        article = "an" if target == "object" else "a"
        r.problem(
            None,
            f"{article} {target} route needs 'key' (the object key or workflow id), "
            'for example key = "{key}"',
        )
    else:
        r.values["key"] = r.template("key", r.table["key"])


def _match(r: _Route) -> None:
    value = r.table.get("match")
    if value is None:
        return
    if not isinstance(value, dict):
        r.problem("match", 'match must be a table such as { "header.kind" = "x" }')
        return
    found: list[Match] = []
    for path_text, expected in value.items():
        try:
            path = FieldPath.parse(path_text)
        except ValueError as exc:
            r.problem("match", f"match: {exc}")
            continue
        if not isinstance(expected, str | int | float | bool):
            r.problem("match", f"match {path_text!r}: compare with a string, number or boolean")
        elif isinstance(expected, float) and math.isnan(expected):
            r.problem("match", f"match {path_text!r}: nan never equals anything")
        else:
            found.append(Match(path, expected))
    r.values["match"] = tuple(found)


def _delay(r: _Route) -> None:
    """A duration or a template; never on a workflow."""
    value = r.table.get("delay")
    if value is None:
        return
    if not isinstance(value, str):
        r.problem("delay", "delay must be a duration such as '4s' or a template")
        return
    if "{" in value:
        r.values["delay"] = r.template("delay", value)
    else:
        try:
            r.values["delay"] = parse_duration(value)
        except DurationError as exc:
            r.problem("delay", f"delay: {exc}")
    if r.target == "workflow":
        r.problem("delay", "Restate does not support delays for workflows")


def _headers(r: _Route) -> None:
    """Kafka header names forwarded as HTTP headers: tokens, never one the bridge sets."""
    value = r.table.get("headers")
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        r.problem("headers", "headers must be a list of Kafka header names")
        return
    for name in value:
        if not http_token(name):
            r.problem("headers", f"headers: {short(name)} is not a valid HTTP header name")
        elif reserved_header(name):
            r.problem(
                "headers",
                f"headers: {name!r} is set by the bridge or the HTTP connection and cannot be "
                "forwarded from a record",
            )
    r.values["headers"] = tuple(dict.fromkeys(value))


def _idempotency_key(r: _Route) -> None:
    """The default key, ``"none"``, or a template; none for a workflow's main handler."""
    default_main = r.target == "workflow" and r.values.get("handler") in WORKFLOW_MAIN_HANDLERS
    workflow_main = r.table.get("workflow_main", default_main)
    if not isinstance(workflow_main, bool):
        r.problem("workflow_main", "workflow_main must be true or false")
        workflow_main = False
    r.workflow_main = workflow_main
    raw = r.table.get("idempotency_key")
    if workflow_main:
        if raw not in (None, "none"):
            r.problem(
                "idempotency_key",
                "a workflow's main handler takes no idempotency key: the workflow id "
                "already makes it run once; remove idempotency_key",
            )
        r.values["idempotency_key"] = None
    elif raw == "none":
        r.values["idempotency_key"] = None
    else:
        source = DEFAULT_IDEMPOTENCY_KEY if raw is None else raw
        r.values["idempotency_key"] = r.template("idempotency_key", source)


def _body(r: _Route) -> None:
    value = r.table.get("body")
    if value is None or value == "{value}":
        r.values["body"] = Body("value")
        return
    if value == "none":
        r.values["body"] = Body("none")
        return
    template = r.template("body", value)
    if template is None:
        return
    single = template.single_field
    kind: Literal["json_field", "template"] = (
        "json_field" if single is not None and single.needs_json else "template"
    )
    r.values["body"] = Body(kind, template)


def _ordering(r: _Route) -> None:
    """``key`` for objects and workflows by default, ``none`` for services (which have no key)."""
    default: Ordering = "none" if r.target == "service" else "key"
    ordering = r.scalar("ordering", default)
    if ordering == "key" and r.target == "service":
        r.problem("ordering", "a service has no key: use 'partition' or 'none'")
    r.values["ordering"] = ordering


def _plain_options(r: _Route) -> None:
    """Options read by their type hint alone: name, content_type, max_in_flight, on_null,
    value_format, key_format, trace_context, max_record_age, on_record_too_old, validate_input,
    and the reply options."""
    for key in (
        "name",
        "content_type",
        "max_in_flight",
        "on_null",
        "value_format",
        "key_format",
        "trace_context",
        "max_record_age",
        "on_record_too_old",
        "validate_input",
        *_REPLY_OPTIONS,
    ):
        value = r.scalar(key)
        if value is not None:
            r.values[key] = value
    if "on_record_too_old" in r.table and "max_record_age" not in r.table:
        r.problem("on_record_too_old", "on_record_too_old is only used with max_record_age")


_REPLY_OPTIONS = ("reply_topic", "reply_correlation_header", "reply_timeout")


def _reply(r: _Route) -> None:
    """Reply options need ``reply_topic``; a reply needs a result Restate keeps: an idempotency
    key, or a workflow's main handler (the workflow id)."""
    if "reply_topic" not in r.table:
        for key in _REPLY_OPTIONS[1:]:
            if key in r.table:
                r.problem(key, f"{key} is only used with reply_topic")
        return
    if r.values.get("idempotency_key") is None and not r.workflow_main and not r.failed:
        r.problem(
            "idempotency_key",
            "a reply route needs an idempotency key: Restate keeps the result of an invocation "
            "made without one only while it runs, so the reply could not be fetched after it "
            "completed or after a restart; remove idempotency_key = 'none'",
        )


_BATCH_EXAMPLE = 'batch = { max_records = 100, max_bytes = "1MiB", max_wait = "50ms" }'
_BATCH_HINTS: dict[str, Any] = {
    "max_records": Annotated[int, Range(1, MAX_BATCH_RECORDS)],
    "max_wait": Annotated[timedelta, Range(timedelta(0), MAX_BATCH_WAIT)],
}


def _batch_settings(r: _Route, value: dict[str, Any]) -> dict[str, Any]:
    """The ``batch`` table's settings that are valid; a problem for each that is not."""
    read: dict[str, Any] = {}
    for key, raw in value.items():
        if key == "max_bytes":
            try:
                size = parse_size(raw)
            except ValueError as exc:
                r.problem("batch", f"batch.max_bytes: {exc}")
                continue
            if not MIN_BATCH_BYTES <= size <= MAX_BATCH_BYTES:
                r.problem(
                    "batch",
                    f"batch.max_bytes must be from 1KiB to 64MiB ({MAX_BATCH_BYTES} bytes), "
                    f"not {short(raw)}",
                )
                continue
            read[key] = size
        elif key in _BATCH_HINTS:
            got, wrong = read_value(raw, _BATCH_HINTS[key], f"batch.{key}")
            if wrong is not None:
                r.problem("batch", wrong)
            else:
                read[key] = got
        else:
            close = closest(key, ("max_records", "max_bytes", "max_wait"))
            said = (
                f"did you mean {close!r}?"
                if close
                else "expected max_records, max_bytes or max_wait"
            )
            r.problem("batch", f"unknown key {key!r} in batch; {said}")
    return read


def _batch(r: _Route) -> None:
    """``batch = { max_records, max_bytes, max_wait }`` for services and objects: one
    invocation per batch, so nothing that is per record in the request (a reply, an idempotency
    key template, forwarded headers, a body template, a delay template) goes with it."""
    value = r.table.get("batch")
    if value is None:
        return
    if not isinstance(value, dict):
        r.problem("batch", f"batch must be an inline table such as {_BATCH_EXAMPLE}")
        return
    read = _batch_settings(r, value)
    if r.target == "workflow":
        r.problem(
            "batch",
            "a workflow runs once per id, so records cannot share one invocation: batch is for "
            "service and object routes; remove batch",
        )
    if "reply_topic" in r.table:
        r.problem(
            "batch",
            "a batch route has no replies (one invocation answers for many records): remove "
            "reply_topic or batch",
        )
    idem = r.table.get("idempotency_key")
    if idem not in (None, "none"):
        r.problem(
            "idempotency_key",
            "a batch's idempotency key is made of its records' coordinates "
            "({topic}-{partition}-{first offset}-{last offset}:{route}); remove idempotency_key "
            "(or set it to 'none')",
        )
    for key, why in (
        ("headers", "each item carries all its record's headers"),
        ("content_type", "a batch is sent as application/json"),
        ("trace_context", "each item carries all its record's headers, trace headers included"),
    ):
        if key in r.table:
            r.problem(key, f"{key} does not apply to a batch route: {why}; remove {key}")
    if r.table.get("body", "{value}") != "{value}":
        r.problem(
            "body",
            "a batch route sends every record whole, as an item of a JSON array (its value "
            "included): remove body",
        )
    if isinstance(r.values.get("delay"), Template):
        r.problem(
            "delay",
            "a batch takes one delay for all its records: use a constant such as '4s', not a "
            "template",
        )
    r.values["idempotency_key"] = None  # the dispatcher names each batch by its coordinates
    r.values["batch"] = BatchConfig(**read, idempotent=idem != "none")


def _status_lists(r: _Route) -> None:
    """``retry_on``, ``dead_letter_on``, ``block_on``: error statuses, each in one list only."""
    given = [key for key in LIST_KEYS if key in r.table]
    for key in given:
        ranges, wrong = parse_statuses(r.table[key], key)
        for problem in wrong:
            r.problem(key, problem)
        r.values[key] = ranges
    if len(given) > 1:
        clash = overlap(StatusPolicy(*(r.values.get(key, ()) for key in LIST_KEYS)))
        if clash is not None:
            r.problem(*clash)


MIN_RATE, MAX_RATE = 0.001, 1_000_000.0
"""Records per second a ``rate_limit`` may be: from one per 1000 s to a million a second."""


def _rate_limit(r: _Route) -> None:
    """``rate_limit`` records a second (an integer or a decimal number), ``rate_limit_burst``
    records (a positive integer, only with ``rate_limit``)."""
    value = r.table.get("rate_limit")
    if value is not None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not (MIN_RATE <= value <= MAX_RATE):  # nan compares false: refused too
            r.problem(
                "rate_limit",
                "rate_limit must be a number of records per second from 0.001 to 1000000 "
                f"(such as 50 or 0.5), not {short(value)}",
            )
        else:
            r.values["rate_limit"] = float(value)
    if "rate_limit_burst" in r.table:
        burst = r.scalar("rate_limit_burst")
        if value is None:
            r.problem(
                "rate_limit_burst",
                "rate_limit_burst is only used with rate_limit; add rate_limit or remove it",
            )
        elif burst is not None:
            r.values["rate_limit_burst"] = burst


def _scope(r: _Route) -> None:
    """``scope`` and ``limit_key``: templates; a constant one must already be a value Restate
    accepts, and a limit key needs a scope (Restate refuses one on an unscoped invocation)."""
    for key, problem in (("scope", scope_problem), ("limit_key", limit_key_problem)):
        if key not in r.table:
            continue
        template = r.template(key, r.table[key])
        if template is None:
            continue
        if template.constant:
            wrong = problem("".join(str(part) for part in template.parts))
            if wrong is not None:
                r.problem(key, wrong)
        r.values[key] = template
    if "limit_key" in r.table and "scope" not in r.table:
        r.problem(
            "limit_key",
            "limit_key needs scope: Restate counts limit keys within a scope and refuses one on "
            'an unscoped invocation; add scope (for example scope = "{header.tenant}")',
        )


def _formats(r: _Route) -> None:
    """``key.a.b`` needs a key read as data; ``value.a.b`` a value that is not raw bytes."""
    value_format = r.values.get("value_format", "json")
    key_format = r.values.get("key_format", "raw")
    for where, path in _paths(r):
        if path.key_field and key_format == "raw":
            r.problem(
                where,
                f"{path.text!r} reads a field of the key, but key_format is 'raw'; set key_format "
                "(json, avro, protobuf or json_schema)",
            )
        if path.needs_json and value_format == "raw":
            r.problem(where, f"{path.text!r} reads a field of the value, but value_format is 'raw'")


def _paths(r: _Route) -> list[tuple[str, FieldPath]]:
    found: list[tuple[str, FieldPath]] = [("match", m.field) for m in r.values.get("match", ())]
    for key in ("key", "delay", "idempotency_key", "scope", "limit_key"):
        template = r.values.get(key)
        if isinstance(template, Template):
            found += [(key, f) for f in template.fields]
    body = r.values.get("body")
    if isinstance(body, Body) and body.template is not None:
        found += [("body", f) for f in body.template.fields]
    return found


_ROUTE_HINTS = HINTS[RouteConfig]
_ROUTE_RULES: tuple[Callable[[_Route], None], ...] = (
    _topic_source,
    _target,
    _service_handler,
    _key,
    _match,
    _delay,
    _headers,
    _idempotency_key,
    _body,
    _ordering,
    _plain_options,
    _reply,
    _batch,
    _status_lists,
    _rate_limit,
    _scope,
    _formats,
)


# -- rules across the file --------------------------------------------------------------------

_Indexed = list[tuple[int, RouteConfig]]


def _dead_letter_loop(
    routes: _Indexed, dead_letter: DeadLetterConfig, delivery: DeliveryConfig, p: Problems
) -> None:
    """A route may not read the dead-letter topic: its records would come back forever."""
    topic = dead_letter.topic
    if topic is None:
        return
    for index, route in routes:
        if route.matches_topic(topic):
            key = "topic_pattern" if route.topic_pattern else "topics"
            if ("routes", index, "topic") in p.lines:
                key = "topic"
            p.add(
                ("routes", index, key),
                f"route {route.name!r} reads the dead-letter topic {topic!r}; "
                "its dead letters would be routed again",
            )


def _delays_within_max(
    routes: _Indexed, dead_letter: DeadLetterConfig, delivery: DeliveryConfig, p: Problems
) -> None:
    for index, route in routes:
        if isinstance(route.delay, timedelta) and route.delay > delivery.max_delay:
            p.add(
                ("routes", index, "delay"),
                f"delay {human(route.delay)} is longer than [delivery] max_delay "
                f"({human(delivery.max_delay)})",
            )


def _reply_topics(
    routes: _Indexed, dead_letter: DeadLetterConfig, delivery: DeliveryConfig, p: Problems
) -> None:
    """A reply topic is neither the dead-letter topic nor a topic any route reads (a loop); a
    constant delay shorter than the wait for the result."""
    for index, route in routes:
        topic = route.reply_topic
        if topic is None:
            continue
        where = ("routes", index, "reply_topic")
        if topic == dead_letter.topic:
            p.add(where, f"reply_topic {topic!r} is the dead-letter topic; use a topic of its own")
        for other in [o for _, o in routes if o.matches_topic(topic)]:
            p.add(
                where,
                f"reply_topic {topic!r} is read by route {other.name!r}: every reply would be "
                "routed again (a loop); reply to a topic no route reads",
            )
        wait = route.reply_timeout or delivery.reply_timeout
        if isinstance(route.delay, timedelta) and route.delay >= wait:
            p.add(
                ("routes", index, "delay"),
                f"delay {human(route.delay)} is not shorter than the reply wait "
                f"({human(wait)}, reply_timeout): every reply would time out",
            )


FILE_RULES = (_dead_letter_loop, _delays_within_max, _reply_topics)
