"""routes.toml: parsed once into frozen, validated values.

Every problem in the file is collected, then raised together as one :class:`ConfigError` whose lines
read ``PATH:LINE: message``. Only the CLI turns that into an exit code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast

from .durations import DurationError, parse_duration
from .record import FieldPath
from .template import Template, TemplateError

TargetKind = Literal["service", "object", "workflow"]
Ordering = Literal["key", "partition", "none"]
OnNull = Literal["skip", "send", "dead_letter"]
TARGETS: tuple[TargetKind, ...] = ("service", "object", "workflow")
ORDERINGS: tuple[Ordering, ...] = ("key", "partition", "none")
DEFAULT_IDEMPOTENCY_KEY = "{topic}-{partition}-{offset}"
WORKFLOW_MAIN_HANDLERS = frozenset({"run", "Run"})


class ConfigError(Exception):
    """Every problem found in a routes file, one ``PATH:LINE: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    group_id: str = "restate-bridge"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """``read_committed`` never hands over records of aborted (or still open) transactions."""
    client_id: str = "restate-bridge"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    """Resolved from the environment variable ``sasl_password_env`` names."""
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    session_timeout_ms: int = 10_000
    fetch_max_bytes: int = 16 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class RestateConfig:
    ingress_url: str = "http://127.0.0.1:8080"
    request_timeout: timedelta = timedelta(seconds=30)
    max_connections: int = 128
    token: str | None = field(default=None, repr=False)
    """Bearer token for the ingress, from ``RESTATE_AUTH_TOKEN``."""


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class DeadLetterConfig:
    topic: str | None = None


@dataclass(frozen=True)
class DeliveryConfig:
    """How much is in flight and how failures are retried (table ``[delivery]``)."""

    max_in_flight: int = 256
    """Sends under way at once, all routes together."""
    max_pending_records: int = 4096
    """Records fetched but not finished; fetching pauses at this bound."""
    commit_interval: timedelta = timedelta(seconds=1)
    drain_timeout: timedelta = timedelta(seconds=30)
    retry_initial: timedelta = timedelta(milliseconds=100)
    retry_max: timedelta = timedelta(seconds=10)
    unknown_target_grace: timedelta = timedelta(seconds=60)
    """How long a 404 for an unknown service/handler is retried before dead-lettering."""
    max_delay: timedelta = timedelta(days=365)
    """The longest delay a record may ask for; a longer one is a dead letter."""
    max_pending_per_partition: int = 10_000
    """Records of one partition fetched but not yet committable (unfinished, or finished behind
    an unfinished one); that partition's fetching pauses at this bound."""


@dataclass(frozen=True)
class Match:
    field: FieldPath
    expected: str | int | float | bool


@dataclass(frozen=True)
class Body:
    """What a route sends: the raw value, a JSON sub-document, a rendered string, or nothing."""

    kind: Literal["value", "json_field", "template", "none"]
    template: Template | None = None


@dataclass(frozen=True)
class RouteConfig:
    name: str
    line: int
    target: TargetKind
    service: str
    handler: str
    topics: tuple[str, ...] = ()
    topic_pattern: re.Pattern[str] | None = None
    key: Template | None = None
    match: tuple[Match, ...] = ()
    delay: timedelta | Template | None = None
    headers: tuple[str, ...] = ()
    idempotency_key: Template | None = None
    body: Body = field(default_factory=lambda: Body("value"))
    content_type: str = "application/json"
    ordering: Ordering = "none"
    max_in_flight: int | None = None
    on_null: OnNull = "send"
    """What a record with a null value (a tombstone) does: sent without a body, skipped (counted
    as ``skipped``) or dead-lettered."""

    def matches_topic(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        return self.topic_pattern is not None and self.topic_pattern.fullmatch(topic) is not None


@dataclass(frozen=True)
class BridgeConfig:
    path: Path
    kafka: KafkaConfig
    restate: RestateConfig
    metrics: MetricsConfig
    dead_letter: DeadLetterConfig
    delivery: DeliveryConfig
    routes: tuple[RouteConfig, ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for r in self.routes for t in r.topics))

    @property
    def topic_pattern(self) -> str | None:
        """One regex for every route's topics, when any route uses ``topic_pattern``."""
        patterns = [r.topic_pattern.pattern for r in self.routes if r.topic_pattern]
        if not patterns:
            return None
        patterns += [re.escape(t) for t in self.topics]
        return "^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")$"


# -- locating keys in the file ----------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=")


def _locate(text: str) -> dict[tuple[Any, ...], int]:
    """Line numbers of tables and keys: ``("kafka",)``, ``("routes", 0, "target")``, ..."""
    lines: dict[tuple[Any, ...], int] = {}
    section: tuple[Any, ...] = ()
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2).strip().strip("\"'")
            if header.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                section = (name, index)
            else:
                section = (name,)
            lines.setdefault(section, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*section, key.group(1).strip("\"'")), number)
    return lines


class _Problems:
    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[str] = []

    def line(self, *where: Any) -> int:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return 1

    def add(self, where: tuple[Any, ...], message: str) -> None:
        self.items.append(f"{self.path}:{self.line(*where)}: {message}")


# -- loading ----------------------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read and validate a routes file.

    In ``env``, ``RESTATE_URL``, ``KAFKA_BOOTSTRAP_SERVERS`` and ``BRIDGE_METRICS_LISTEN`` override
    the file (handy in containers).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:1: cannot read the routes file: {exc.strerror}"]) from exc
    return parse_config(text, path, env or {})


def parse_config(text: str, path: Path, env: Mapping[str, str]) -> BridgeConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = found.group(1) if found else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([f"{path}:{line}: TOML syntax error: {message}"]) from None
    problems = _Problems(path, _locate(text))
    reader = _Reader(problems)
    known = {"kafka", "restate", "metrics", "dead_letter", "delivery", "routes"}
    for name in doc:
        if name not in known:
            problems.add((name,), f"unknown table [{name}]; expected one of {sorted(known)}")
    kafka = reader.kafka(doc.get("kafka"), env)
    restate = reader.restate(doc.get("restate", {}), env)
    metrics = reader.metrics(doc.get("metrics", {}), env)
    dead_letter = reader.dead_letter(doc.get("dead_letter", {}))
    delivery = reader.delivery(doc.get("delivery", {}))
    routes = reader.routes(doc.get("routes"))
    if problems.items or kafka is None:
        raise ConfigError(problems.items)
    return BridgeConfig(path, kafka, restate, metrics, dead_letter, delivery, routes)


class _Reader:
    def __init__(self, problems: _Problems) -> None:
        self.p = problems

    # generic helpers

    def table(self, value: Any, where: tuple[Any, ...], what: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.p.add(where, f"{what} must be a table")
            return None
        return value

    def unknown(self, table: dict[str, Any], allowed: set[str], where: tuple[Any, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.p.add(
                    (*where, key),
                    f"unknown key {key!r} in {_label(where)}; "
                    f"expected one of {', '.join(sorted(allowed))}",
                )

    def string(
        self, table: dict[str, Any], key: str, where: tuple[Any, ...], *, required: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.p.add(where, f"{_label(where)} needs {key!r}")
            return None
        if not isinstance(value, str) or not value:
            self.p.add((*where, key), f"{key!r} must be a non-empty string")
            return None
        return value

    def integer(self, table: dict[str, Any], key: str, where: tuple[Any, ...]) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.p.add((*where, key), f"{key!r} must be a positive integer")
            return None
        return value

    def duration(self, table: dict[str, Any], key: str, where: tuple[Any, ...]) -> timedelta | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.p.add((*where, key), f"{key!r} must be a duration string such as '4s'")
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.p.add((*where, key), f"{key!r}: {exc}")
            return None

    def template(self, value: Any, where: tuple[Any, ...], key: str) -> Template | None:
        if not isinstance(value, str) or not value:
            self.p.add(where, f"{key!r} must be a non-empty template string")
            return None
        try:
            return Template.parse(value)
        except TemplateError as exc:
            self.p.add(where, f"{key!r}: {exc}")
            return None

    # tables

    def kafka(self, value: Any, env: Mapping[str, str]) -> KafkaConfig | None:
        where = ("kafka",)
        if value is None:
            self.p.add((), "missing table [kafka] with bootstrap_servers and group_id")
            return None
        table = self.table(value, where, "[kafka]")
        if table is None:
            return None
        fields = KafkaConfig.__dataclass_fields__
        self.unknown(table, set(fields) - {"sasl_password"}, where)  # resolved from env
        servers = env.get("KAFKA_BOOTSTRAP_SERVERS") or table.get("bootstrap_servers")
        if isinstance(servers, list) and servers and all(isinstance(s, str) for s in servers):
            servers = ",".join(servers)
        if not isinstance(servers, str) or not servers:
            self.p.add(
                (*where, "bootstrap_servers"),
                "[kafka] needs bootstrap_servers, a string 'host:port[,host:port]' or a list",
            )
            return None
        reset = table.get("auto_offset_reset", "earliest")
        if reset not in ("earliest", "latest"):
            self.p.add(
                (*where, "auto_offset_reset"),
                f"auto_offset_reset must be 'earliest' or 'latest', not {reset!r}",
            )
            reset = "earliest"
        kwargs: dict[str, Any] = {"bootstrap_servers": servers, "auto_offset_reset": reset}
        for key in fields:
            if key in kwargs or key not in table:
                continue
            if fields[key].type in ("int",):
                kwargs[key] = self.integer(table, key, where)
            else:
                kwargs[key] = self.string(table, key, where)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return KafkaConfig(**kwargs)

    def restate(self, value: Any, env: Mapping[str, str]) -> RestateConfig:
        where = ("restate",)
        table = self.table(value, where, "[restate]") or {}
        self.unknown(table, {"ingress_url", "request_timeout", "max_connections"}, where)
        url = env.get("RESTATE_URL") or self.string(table, "ingress_url", where)
        if url is not None and not re.match(r"^https?://", url):
            self.p.add((*where, "ingress_url"), "ingress_url must start with http:// or https://")
        kwargs: dict[str, Any] = {
            "ingress_url": url,
            "request_timeout": self.duration(table, "request_timeout", where),
            "max_connections": self.integer(table, "max_connections", where),
        }
        return RestateConfig(**{k: v for k, v in kwargs.items() if v is not None})

    def metrics(self, value: Any, env: Mapping[str, str]) -> MetricsConfig:
        where = ("metrics",)
        table = self.table(value, where, "[metrics]") or {}
        self.unknown(table, {"listen"}, where)
        listen = env.get("BRIDGE_METRICS_LISTEN") or self.string(table, "listen", where)
        if listen is None:
            return MetricsConfig()
        _, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            self.p.add((*where, "listen"), f"listen must be 'host:port', not {listen!r}")
            return MetricsConfig()
        return MetricsConfig(listen)

    def dead_letter(self, value: Any) -> DeadLetterConfig:
        where = ("dead_letter",)
        table = self.table(value, where, "[dead_letter]") or {}
        self.unknown(table, {"topic"}, where)
        return DeadLetterConfig(self.string(table, "topic", where))

    def delivery(self, value: Any) -> DeliveryConfig:
        where = ("delivery",)
        table = self.table(value, where, "[delivery]") or {}
        fields = DeliveryConfig.__dataclass_fields__
        self.unknown(table, set(fields), where)
        kwargs: dict[str, Any] = {}
        for key, spec in fields.items():
            if key in table:
                read = self.integer if spec.type == "int" else self.duration
                kwargs[key] = read(table, key, where)
        return DeliveryConfig(**{k: v for k, v in kwargs.items() if v is not None})

    def routes(self, value: Any) -> tuple[RouteConfig, ...]:
        if value is None:
            self.p.add((), "no [[routes]]: add at least one route")
            return ()
        if not isinstance(value, list):
            self.p.add(("routes",), "routes must be an array of tables: [[routes]]")
            return ()
        routes: list[RouteConfig] = []
        names: dict[str, int] = {}
        seen: dict[str, tuple[int, int]] = {}
        reported: set[int] = set()
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                line = self.p.line("routes", index, "name")
                if name in names:
                    self.p.add(
                        ("routes", index, "name"),
                        f"duplicate route name {name!r} (first at line {names[name]})",
                    )
                    reported.add(index)
                names.setdefault(name, line)
            route = self.route(item, index)
            if route is not None:
                routes.append(route)
                first, seen_at = seen.setdefault(route.name, (index, route.line))
                if first != index and index not in reported:
                    # default names (service.handler) must be unique too
                    self.p.add(
                        ("routes", index),
                        f"two routes are both called {route.name!r} (first at line {seen_at}); "
                        "give them distinct names",
                    )
        return tuple(routes)

    def route(self, value: Any, index: int) -> RouteConfig | None:
        where: tuple[Any, ...] = ("routes", index)
        table = self.table(value, where, "each [[routes]] entry")
        if table is None:
            return None
        before = len(self.p.items)
        allowed = {
            "name", "topic", "topics", "topic_pattern", "target", "service", "handler", "key",
            "match", "delay", "headers", "idempotency_key", "body", "content_type", "ordering",
            "max_in_flight", "workflow_main", "on_null",
        }  # fmt: skip
        self.unknown(table, allowed, where)

        topics: tuple[str, ...] = ()
        pattern: re.Pattern[str] | None = None
        given = [k for k in ("topic", "topics", "topic_pattern") if k in table]
        if len(given) != 1:
            self.p.add(where, "a route needs exactly one of topic, topics or topic_pattern")
        elif given[0] == "topic":
            topic = self.string(table, "topic", where)
            topics = (topic,) if topic else ()
        elif given[0] == "topics":
            raw = table["topics"]
            if (
                not isinstance(raw, list)
                or not raw
                or not all(isinstance(t, str) and t for t in raw)
            ):
                self.p.add((*where, "topics"), "topics must be a non-empty list of topic names")
            else:
                topics = tuple(raw)
        else:
            raw_pattern = self.string(table, "topic_pattern", where)
            if raw_pattern is not None:
                try:
                    pattern = re.compile(raw_pattern)
                except re.error as exc:
                    self.p.add((*where, "topic_pattern"), f"bad topic_pattern regex: {exc}")

        target = table.get("target")
        if target not in TARGETS:
            self.p.add(
                (*where, "target") if "target" in table else where,
                f"target must be one of {', '.join(TARGETS)}, not {target!r}",
            )
        service = self.string(table, "service", where, required=True)
        handler = self.string(table, "handler", where, required=True)

        key: Template | None = None
        if target not in TARGETS:
            pass  # reported above; a key cannot be judged without a target
        elif target == "service":
            if "key" in table:
                self.p.add(
                    (*where, "key"),
                    "a service has no key; use target = 'object' or 'workflow', or remove 'key'",
                )
        elif "key" not in table:
            article = "an" if target == "object" else "a"
            self.p.add(
                where,
                f"{article} {target} route needs 'key' (the object key or workflow id), "
                'for example key = "{key}"',
            )
        else:
            key = self.template(table["key"], (*where, "key"), "key")

        match = self.match(table.get("match"), where)
        delay = self.delay(table.get("delay"), where)
        if delay is not None and target == "workflow":
            self.p.add((*where, "delay"), "Restate does not support delays for workflows")

        headers: tuple[str, ...] = ()
        raw_headers = table.get("headers")
        if raw_headers is not None:
            if not isinstance(raw_headers, list) or not all(
                isinstance(h, str) and h for h in raw_headers
            ):
                self.p.add((*where, "headers"), "headers must be a list of Kafka header names")
            else:
                headers = tuple(raw_headers)

        workflow_main = table.get("workflow_main", target == "workflow" and handler in
                                  WORKFLOW_MAIN_HANDLERS)  # fmt: skip
        if not isinstance(workflow_main, bool):
            self.p.add((*where, "workflow_main"), "workflow_main must be true or false")
            workflow_main = False
        idem_raw = table.get("idempotency_key")
        idempotency_key: Template | None = None
        if workflow_main:
            if idem_raw not in (None, "none"):
                self.p.add(
                    (*where, "idempotency_key"),
                    "a workflow's main handler takes no idempotency key: the workflow id "
                    "already makes it run once; remove idempotency_key",
                )
        elif idem_raw != "none":
            source = DEFAULT_IDEMPOTENCY_KEY if idem_raw is None else idem_raw
            idempotency_key = self.template(source, (*where, "idempotency_key"),
                                            "idempotency_key")  # fmt: skip

        body = self.body(table.get("body"), where)
        content_type = self.string(table, "content_type", where) or "application/json"
        default_ordering: Ordering = "none" if target == "service" else "key"
        ordering = table.get("ordering", default_ordering)
        if ordering not in ORDERINGS:
            self.p.add((*where, "ordering"), f"ordering must be one of {ORDERINGS}")
            ordering = default_ordering
        if ordering == "key" and target == "service":
            self.p.add((*where, "ordering"), "a service has no key: use 'partition' or 'none'")
        max_in_flight = self.integer(table, "max_in_flight", where)
        on_null = table.get("on_null", "send")
        if on_null not in ("skip", "send", "dead_letter"):
            self.p.add((*where, "on_null"), "on_null must be one of skip, send, dead_letter")
            on_null = "send"

        name = table.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            self.p.add((*where, "name"), "name must be a non-empty string")
            name = None
        if len(self.p.items) > before:
            return None
        return RouteConfig(
            name=name or f"{service}.{handler}",
            line=self.p.line(*where),
            target=cast(TargetKind, target),
            service=service or "",
            handler=handler or "",
            topics=topics,
            topic_pattern=pattern,
            key=key,
            match=match,
            delay=delay,
            headers=headers,
            idempotency_key=idempotency_key,
            body=body,
            content_type=content_type,
            ordering=ordering,
            max_in_flight=max_in_flight,
            on_null=on_null,
        )

    def match(self, value: Any, where: tuple[Any, ...]) -> tuple[Match, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.p.add((*where, "match"), 'match must be a table such as { "header.kind" = "x" }')
            return ()
        out: list[Match] = []
        for path_text, expected in value.items():
            try:
                path = FieldPath.parse(path_text)
            except ValueError as exc:
                self.p.add((*where, "match"), f"match: {exc}")
                continue
            if not isinstance(expected, str | int | float | bool):
                self.p.add((*where, "match"), f"match {path_text!r}: compare with a string, "
                           "number or boolean")  # fmt: skip
                continue
            out.append(Match(path, expected))
        return tuple(out)

    def delay(self, value: Any, where: tuple[Any, ...]) -> timedelta | Template | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.p.add((*where, "delay"), "delay must be a duration such as '4s' or a template")
            return None
        if "{" in value:
            return self.template(value, (*where, "delay"), "delay")
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.p.add((*where, "delay"), f"delay: {exc}")
            return None

    def body(self, value: Any, where: tuple[Any, ...]) -> Body:
        if value is None or value == "{value}":
            return Body("value")
        if value == "none":
            return Body("none")
        template = self.template(value, (*where, "body"), "body")
        if template is None:
            return Body("value")
        single = template.single_field
        if single is not None and single.needs_json:
            return Body("json_field", template)
        return Body("template", template)


def _label(where: tuple[Any, ...]) -> str:
    if not where:
        return "the file"
    if where[0] == "routes" and len(where) > 1:
        return f"[[routes]] #{where[1] + 1}"
    return f"[{where[0]}]"
