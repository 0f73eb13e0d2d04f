"""routes.toml: parsed once into frozen, validated values.

Every problem in the file is collected, then raised together as one :class:`ConfigError` whose lines
read ``PATH:LINE: message`` (``$NAME: message`` for the environment). Only the CLI turns that into
an exit code. Reading never raises anything else, whatever the TOML document holds.

The scalar tables (``[kafka]``, ``[restate]``, ``[metrics]``, ``[dead_letter]``, ``[delivery]``) are
read from their dataclasses' own type hints: ``int`` is a positive integer, ``timedelta`` a
positive duration, ``Literal[...]`` one of its values, ``str`` a non-empty string, ``X | None`` an
optional ``X``; an ``Annotated`` :class:`Range` or :class:`Check` narrows a field. A new option is
one annotated field. Routes are read by small named rules (``_ROUTE_RULES``); rules that need the
whole file (a route reading the dead-letter topic, a delay beyond ``max_delay``) run after them.

Environment overrides and secrets are read here and nowhere else, from the injected ``env``:
``RESTATE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``, ``BRIDGE_METRICS_LISTEN`` (each overrides the file),
``BRIDGE_LOG_LEVEL``, ``RESTATE_AUTH_TOKEN`` and the variable ``[kafka] sasl_password_env`` names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import ssl
import tomllib
import types
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin, get_type_hints

from .durations import DurationError, DurationTooLong, parse_duration
from .record import FieldPath, reserved_header
from .template import Template, TemplateError

TargetKind = Literal["service", "object", "workflow"]
Ordering = Literal["key", "partition", "none"]
OnNull = Literal["skip", "send", "dead_letter"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
TARGETS: tuple[TargetKind, ...] = get_args(TargetKind)
ORDERINGS: tuple[Ordering, ...] = get_args(Ordering)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_IDEMPOTENCY_KEY = "{topic}-{partition}-{offset}"
WORKFLOW_MAIN_HANDLERS = frozenset({"run", "Run"})
INT32_MAX = 2**31 - 1


class ConfigError(Exception):
    """Every problem found in a routes file, one ``PATH:LINE: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- field markers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an ``int`` or ``timedelta`` field (the defaults are positive ones)."""

    low: Any
    high: Any


@dataclass(frozen=True)
class Check:
    """A rule of one field: ``rule(value)`` says what is wrong with a read value, or ``None``."""

    rule: Callable[[Any], str | None]


@dataclass(frozen=True)
class Hint:
    """How to write the field, for its "missing" and "wrong type" messages."""

    text: str


@dataclass(frozen=True)
class CommaList:
    """A ``str`` field that may also be written as a list of strings (joined with commas)."""


FROM_ENV = {"from_env": True}
"""Field metadata: resolved from the environment, never written in the file."""

POSITIVE_INT = Range(1, INT32_MAX)
POSITIVE_DURATION = Range(timedelta(microseconds=1), timedelta(days=3650))
"""Ten years: longer is a typo, and it keeps every timer far from ``timedelta``'s limits."""


def _host_port(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not (port.isascii() and port.isdigit()):
        return f"listen must be 'host:port', not {value!r}"
    if int(port) > 65535:
        return f"listen port must be from 0 to 65535 (0 picks a free port), not {port}"
    return None


def _http_url(value: str) -> str | None:
    if not re.match(r"^https?://", value):
        return "ingress_url must start with http:// or https://"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as exc:
        return f"ingress_url {value!r}: {exc}"
    if not parts.hostname:
        return f"ingress_url {value!r} has no host"
    return None


def _bootstrap_servers(value: str) -> str | None:
    for server in value.split(","):
        server = server.strip()
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            bad_rest = bool(rest) and port is None
        elif server.count(":") == 1:
            host, _, port = server.partition(":")
            bad_rest = False
        else:  # a bare name or IPv6 address: the default port
            host, port, bad_rest = server, None, False
        if not host or bad_rest or any(c.isspace() for c in host):
            return f"bootstrap_servers: bad server {server!r}; write 'host:port[,host:port]'"
        if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            return f"bootstrap_servers: bad port in {server!r}; a port is 1 to 65535"
    return None


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic_name(value: str) -> str | None:
    if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        return f"{value!r} is not a Kafka topic name (1 to 249 of the characters a-z A-Z 0-9 . _ -)"
    return None


def _variable_name(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return f"{value!r} is not an environment variable name such as 'KAFKA_PASSWORD'"
    return None


def _header_value(value: str) -> str | None:
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"{value!r} holds control characters, which an HTTP header cannot carry"
    return None


# -- the tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: Annotated[
        str,
        CommaList(),
        Hint("a string 'host:port[,host:port]' or a list"),
        Check(_bootstrap_servers),
    ]
    """Overridden by ``KAFKA_BOOTSTRAP_SERVERS``."""
    group_id: str = "restate-bridge"
    """The consumer group; replicas with the same id share the partitions."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without a committed offset starts."""
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """``read_committed`` never hands over records of aborted (or still open) transactions."""
    client_id: str = "restate-bridge"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    """Required with (and only with) a ``SASL_*`` protocol."""
    sasl_username: str | None = None
    sasl_password_env: Annotated[str | None, Check(_variable_name)] = None
    """The name of the environment variable holding the SASL password (never the password)."""
    ssl_cafile: str | None = None
    """PEM files, only with ``SSL`` or ``SASL_SSL``; they must exist and load."""
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    session_timeout_ms: Annotated[int, Range(1000, INT32_MAX)] = 10_000
    """The group session timeout; heartbeats every third of it."""
    fetch_max_bytes: int = 16 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024
    """Fetch sizes: with the delivery limits they bound memory."""
    sasl_password: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from the variable ``sasl_password_env`` names."""


@dataclass(frozen=True)
class RestateConfig:
    ingress_url: Annotated[str, Check(_http_url)] = "http://127.0.0.1:8080"
    """Overridden by ``RESTATE_URL``."""
    request_timeout: timedelta = timedelta(seconds=30)
    """Per ``/send``; a timeout is retried."""
    max_connections: int = 128
    """The connection pool size."""
    token: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """``RESTATE_AUTH_TOKEN``, sent as ``Authorization: Bearer``."""


@dataclass(frozen=True)
class MetricsConfig:
    listen: Annotated[str, Check(_host_port)] = "127.0.0.1:9464"
    """``host:port`` of the status page and ``/metrics``; port 0 picks a free one. Overridden by
    ``BRIDGE_METRICS_LISTEN``."""

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class DeadLetterConfig:
    topic: Annotated[str | None, Check(_topic_name)] = None
    """Where records that can never succeed go; without it such a record blocks its partition."""


@dataclass(frozen=True)
class DeliveryConfig:
    """How much is in flight and how failures are retried (table ``[delivery]``)."""

    max_in_flight: int = 256
    """Sends under way at once, all routes together."""
    max_pending_records: int = 4096
    """Records fetched but not finished; fetching pauses at this bound."""
    commit_interval: timedelta = timedelta(seconds=1)
    """How often the contiguous watermark is committed (also on revoke and shutdown)."""
    drain_timeout: timedelta = timedelta(seconds=30)
    """How long shutdown and revocation wait for sends under way."""
    retry_initial: timedelta = timedelta(milliseconds=100)
    """The first backoff of a retryable failure; at most ``retry_max``."""
    retry_max: timedelta = timedelta(seconds=10)
    """The longest backoff, and the cap of any ``Retry-After``."""
    unknown_target_grace: Annotated[timedelta, Range(timedelta(0), timedelta(days=3650))] = (
        timedelta(seconds=60)
    )
    """How long a 404 for an unknown service/handler is retried before dead-lettering (0: never)."""
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
    content_type: Annotated[str, Check(_header_value)] = "application/json"
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
    log_level: str = "INFO"
    """From ``BRIDGE_LOG_LEVEL``: DEBUG, INFO, WARNING, ERROR or CRITICAL."""

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


SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "restate": RestateConfig,
    "metrics": MetricsConfig,
    "dead_letter": DeadLetterConfig,
    "delivery": DeliveryConfig,
}
_HINTS = {
    cls: get_type_hints(cls, include_extras=True) for cls in (*SECTIONS.values(), RouteConfig)
}
ENV_OVERRIDES: dict[tuple[str, str], str] = {
    ("kafka", "bootstrap_servers"): "KAFKA_BOOTSTRAP_SERVERS",
    ("restate", "ingress_url"): "RESTATE_URL",
    ("metrics", "listen"): "BRIDGE_METRICS_LISTEN",
}
ROUTE_KEYS = frozenset(
    {"name", "topic", "topics", "topic_pattern", "target", "service", "handler", "key"}
    | {"match", "delay", "headers", "idempotency_key", "body", "content_type", "ordering"}
    | {"max_in_flight", "workflow_main", "on_null"}
)


# -- locating keys in the file ----------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)([^\]]*)\]\]?\s*(?:#.*)?")
"""A table header; linear on any line (no two quantifiers compete for the same characters)."""
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-\"' ]+")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=")


def _locate(text: str) -> dict[tuple[Any, ...], int]:
    """Line numbers of tables and keys: ``("kafka",)``, ``("routes", 0, "target")``, ...

    Lines are counted as TOML counts them: only ``\\n`` ends one.
    """
    lines: dict[tuple[Any, ...], int] = {}
    section: tuple[Any, ...] = ()
    counts: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        header = _HEADER.fullmatch(line)
        if header and _TABLE_NAME.fullmatch(header.group(2)):
            name = header.group(2).strip().strip("\"'")
            if header.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                section = (name, index)
            else:  # [routes.match] belongs to the latest [[routes]]
                first, *rest = name.split(".")
                section = (first, counts[first], *rest) if first in counts else (first, *rest)
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
        self.items.append(f"{self.path}:{self.line(*where)}: {_one_line(message)}")

    def env(self, name: str, message: str) -> None:
        self.items.append(f"${_bare(name)}: {_one_line(message)}")


def _one_line(message: str) -> str:
    """Each problem is one line, whatever a quoted value holds."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _bare(name: str) -> str:
    """A table or variable name as written when it is a plain word, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else repr(name)


def _label(where: tuple[Any, ...]) -> str:
    if not where:
        return "the file"
    if where[0] == "routes" and len(where) > 1:
        return f"[[routes]] #{where[1] + 1}"
    return f"[{where[0]}]"


# -- loading ----------------------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read and validate a routes file, with the environment overrides and secrets in ``env``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{path}:1: cannot read the routes file: {reason}"]) from exc
    except ValueError as exc:  # e.g. a NUL in the path
        raise ConfigError([f"{path}:1: cannot read the routes file: {exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [f"{path}:{line}: the routes file is not UTF-8 text (byte {raw[exc.start]:#04x})"]
        ) from None
    return parse_config(text, path, env or {})


def parse_config(text: str, path: Path, env: Mapping[str, str]) -> BridgeConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = found.group(1) if found else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([f"{path}:{line}: TOML syntax error: {message}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}:1: TOML syntax error: nested too deeply"]) from None
    problems = _Problems(path, _locate(text))
    known = {*SECTIONS, "routes"}
    for name in doc:
        if name not in known:
            problems.add((name,), f"unknown table [{_bare(name)}]; expected one of {sorted(known)}")
    if "kafka" not in doc:
        problems.add((), "missing table [kafka] with bootstrap_servers and group_id")
    sections: dict[str, Any] = {}
    clean: set[str] = set()  # read without a problem: rules across their fields can run
    for name, cls in SECTIONS.items():
        before = len(problems.items)
        if name in doc or name != "kafka":
            sections[name] = _section(cls, name, doc.get(name, {}), env, problems)
        if len(problems.items) == before:
            clean.add(name)
    kafka = cast(KafkaConfig | None, sections.get("kafka"))
    restate = cast(RestateConfig, sections["restate"] or RestateConfig())
    metrics = cast(MetricsConfig, sections["metrics"] or MetricsConfig())
    dead_letter = cast(DeadLetterConfig, sections["dead_letter"] or DeadLetterConfig())
    delivery = cast(DeliveryConfig, sections["delivery"] or DeliveryConfig())
    if kafka is not None and "kafka" in clean:
        kafka = _kafka_rules(kafka, problems, env)
    if "delivery" in clean:
        _delivery_rules(delivery, problems)
    indexed = _routes(doc.get("routes"), problems)
    for rule in _FILE_RULES:
        rule(indexed, dead_letter, delivery, problems)
    restate = dataclasses.replace(restate, token=env.get("RESTATE_AUTH_TOKEN") or None)
    log_level = _log_level(env.get("BRIDGE_LOG_LEVEL") or "INFO", problems)
    if problems.items or kafka is None:
        raise ConfigError(problems.items)
    routes = tuple(route for _, route in indexed)
    return BridgeConfig(path, kafka, restate, metrics, dead_letter, delivery, routes, log_level)


def check_log_level(value: str) -> str | None:
    """What is wrong with a log level name (any case), or ``None``."""
    if value.upper() not in LOG_LEVELS:
        return f"log level must be one of {', '.join(n.lower() for n in LOG_LEVELS)}, not {value!r}"
    return None


def _log_level(value: str, problems: _Problems) -> str:
    wrong = check_log_level(value)
    if wrong is not None:
        problems.env("BRIDGE_LOG_LEVEL", wrong)
        return "INFO"
    return value.upper()


# -- scalar tables, from the type hints ------------------------------------------------------


def _section(
    cls: type[Any], name: str, value: Any, env: Mapping[str, str], problems: _Problems
) -> Any:
    """One scalar table as ``cls``, or ``None`` when it is unusable (problems are recorded)."""
    where = (name,)
    if not isinstance(value, dict):
        problems.add(where, f"[{name}] must be a table")
        return None
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("from_env")]
    allowed = {f.name for f in fields}
    for key in value:
        if key not in allowed:
            problems.add(
                (*where, key),
                f"unknown key {key!r} in [{name}]; expected one of {', '.join(sorted(allowed))}",
            )
    hints = _HINTS[cls]
    kwargs: dict[str, Any] = {}
    complete = True
    for spec in fields:
        hint = hints[spec.name]
        required = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        variable = ENV_OVERRIDES.get((name, spec.name))
        if spec.name in value:
            read, wrong = _read(value[spec.name], hint, spec.name)
            if wrong is not None:
                problems.add((*where, spec.name), wrong)
            else:
                kwargs[spec.name] = read
        override = env.get(variable) if variable else None
        if variable and override:
            read, wrong = _read(override, hint, spec.name)
            if wrong is not None:
                problems.env(variable, wrong)
                kwargs.pop(spec.name, None)
            else:
                kwargs[spec.name] = read
        if required and spec.name not in kwargs:
            complete = False
            if spec.name not in value and not (variable and override):
                problems.add(where, _missing(name, spec.name, hint))
    return cls(**kwargs) if complete else None


def _missing(section: str, key: str, hint: Any) -> str:
    text = next((m.text for m in _markers(hint) if isinstance(m, Hint)), None)
    return f"[{section}] needs {key}" + (f", {text}" if text else "")


def _markers(hint: Any) -> tuple[Any, ...]:
    return get_args(hint)[1:] if get_origin(hint) is Annotated else ()


def _read(value: Any, hint: Any, key: str) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint``, else ``(None, problem)``."""
    markers = _markers(hint)
    base = get_args(hint)[0] if markers else hint
    if get_origin(base) in (Union, types.UnionType):  # X | None: present means X
        base = next(a for a in get_args(base) if a is not type(None))
    if get_origin(base) is Annotated:
        markers += _markers(base)
        base = get_args(base)[0]
    bounds = next((m for m in markers if isinstance(m, Range)), None)
    hint_text = next((m.text for m in markers if isinstance(m, Hint)), None)
    if get_origin(base) is Literal:
        choices = get_args(base)
        if not isinstance(value, str) or value not in choices:
            return None, f"{key} must be one of {', '.join(choices)}, not {_short(value)}"
        read: Any = value
    elif base is bool:
        if not isinstance(value, bool):
            return None, f"{key} must be true or false"
        read = value
    elif base is int:
        read, wrong = _integer(value, key, bounds or POSITIVE_INT)
        if wrong is not None:
            return None, wrong
    elif base is timedelta:
        read, wrong = _duration(value, key, bounds or POSITIVE_DURATION)
        if wrong is not None:
            return None, wrong
    elif base is str:
        joins = any(isinstance(m, CommaList) for m in markers)
        if joins and isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            value = ",".join(value)
        if not isinstance(value, str) or not value:
            if hint_text is not None:
                return None, f"{key} must be {hint_text}"
            return None, f"{key!r} must be a non-empty string"
        read = value
    else:  # pragma: no cover - a field type this reader does not know is a programming error
        raise TypeError(f"no reader for {key}: {hint!r}")
    for marker in markers:
        if isinstance(marker, Check):
            wrong = marker.rule(read)
            if wrong is not None:
                return None, wrong
    return read, None


def _integer(value: Any, key: str, bounds: Range) -> tuple[int | None, str | None]:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and bounds.low <= value <= bounds.high:
        return value, None
    if bounds == POSITIVE_INT and not (ok and value > INT32_MAX):
        return None, f"{key!r} must be a positive integer"
    return None, f"{key!r} must be an integer from {bounds.low} to {bounds.high}"


def _duration(value: Any, key: str, bounds: Range) -> tuple[timedelta | None, str | None]:
    if not isinstance(value, str):
        return None, f"{key!r} must be a duration string such as '4s'"
    try:
        read = parse_duration(value)
    except DurationTooLong:
        return None, f"{key!r}: {_short(value)} is too long; at most {_human(bounds.high)}"
    except DurationError as exc:
        return None, f"{key!r}: {exc}"
    except (OverflowError, ValueError):
        return None, f"{key!r}: {_short(value)} is too long; at most {_human(bounds.high)}"
    if read > bounds.high:
        return None, f"{key!r}: {_short(value)} is too long; at most {_human(bounds.high)}"
    if read < bounds.low:
        if bounds.low == POSITIVE_DURATION.low:
            return None, f"{key!r} must be longer than zero, not {_short(value)}"
        return None, f"{key!r} must be at least {_human(bounds.low)}, not {_short(value)}"
    return read, None


def _human(delta: timedelta) -> str:
    if delta.days and not delta.seconds and not delta.microseconds:
        return f"{delta.days}d"
    return f"{delta.total_seconds():g}s"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- rules across fields of one table ---------------------------------------------------------

_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_SSL_PROTOCOLS = ("SSL", "SASL_SSL")


def _kafka_rules(kafka: KafkaConfig, problems: _Problems, env: Mapping[str, str]) -> KafkaConfig:
    """SASL and TLS settings that only make sense together; resolves the SASL password."""
    at = ("kafka",)
    sasl = kafka.security_protocol in _SASL_PROTOCOLS
    if kafka.sasl_mechanism is not None and not sasl:
        problems.add(
            (*at, "sasl_mechanism"),
            f"sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
            f"not {kafka.security_protocol}",
        )
    if sasl and kafka.sasl_mechanism is None:
        problems.add(
            (*at, "security_protocol"),
            f"security_protocol {kafka.security_protocol} needs sasl_mechanism "
            "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
        )
    if kafka.sasl_mechanism == "OAUTHBEARER":
        problems.add(
            (*at, "sasl_mechanism"),
            "sasl_mechanism OAUTHBEARER needs a token provider, which the bridge does not have; "
            "use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        )
    for key in ("sasl_username", "sasl_password_env"):
        if getattr(kafka, key) is not None and kafka.sasl_mechanism is None:
            problems.add((*at, key), f"{key} is only used with sasl_mechanism")
    password = None
    if kafka.sasl_mechanism is not None and kafka.sasl_mechanism != "OAUTHBEARER":
        for key in ("sasl_username", "sasl_password_env"):
            if getattr(kafka, key) is None:
                problems.add(
                    (*at, "sasl_mechanism"), f"sasl_mechanism {kafka.sasl_mechanism} needs {key}"
                )
    if kafka.sasl_password_env is not None:
        password = env.get(kafka.sasl_password_env) or None
        if password is None:
            problems.env(
                kafka.sasl_password_env,
                "unset or empty, but [kafka] sasl_password_env names it as the SASL password",
            )
    _ssl_files(kafka, problems)
    return dataclasses.replace(kafka, sasl_password=password)


def _ssl_files(kafka: KafkaConfig, problems: _Problems) -> None:
    files = {k: getattr(kafka, k) for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
    before = len(problems.items)
    for key, name in files.items():
        if name is None:
            continue
        if kafka.security_protocol not in _SSL_PROTOCOLS:
            problems.add(
                ("kafka", key),
                f"{key} is only used with security_protocol SSL or SASL_SSL, "
                f"not {kafka.security_protocol}",
            )
        elif not os.path.isfile(name):
            problems.add(("kafka", key), f"{key}: no such file {name!r}")
    if files["ssl_keyfile"] is not None and files["ssl_certfile"] is None:
        problems.add(("kafka", "ssl_keyfile"), "ssl_keyfile needs ssl_certfile (the certificate)")
    if kafka.security_protocol in _SSL_PROTOCOLS and len(problems.items) == before:
        try:
            context = ssl.create_default_context(cafile=files["ssl_cafile"])
            if files["ssl_certfile"] is not None:
                context.load_cert_chain(files["ssl_certfile"], files["ssl_keyfile"])
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.add(("kafka", "security_protocol"), f"TLS files do not load: {exc}")


def _delivery_rules(delivery: DeliveryConfig, problems: _Problems) -> None:
    if delivery.retry_initial > delivery.retry_max:
        problems.add(
            ("delivery", "retry_initial"),
            f"retry_initial ({_human(delivery.retry_initial)}) must not be longer than "
            f"retry_max ({_human(delivery.retry_max)})",
        )


# -- routes -----------------------------------------------------------------------------------


@dataclass
class _Route:
    """One ``[[routes]]`` entry while the rules read it into ``values`` (RouteConfig's fields)."""

    table: dict[str, Any]
    where: tuple[Any, ...]
    p: _Problems
    values: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

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
        read, wrong = _read(self.table[key], _ROUTE_HINTS[key], key)
        if wrong is not None:
            self.problem(key, wrong)
            return default
        return read

    @property
    def target(self) -> TargetKind | None:
        return cast(TargetKind | None, self.values.get("target"))


def _routes(value: Any, problems: _Problems) -> list[tuple[int, RouteConfig]]:
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


def _route(value: Any, index: int, problems: _Problems) -> RouteConfig | None:
    where: tuple[Any, ...] = ("routes", index)
    if not isinstance(value, dict):
        problems.add(where, "each [[routes]] entry must be a table")
        return None
    for key in value:
        if key not in ROUTE_KEYS:
            problems.add(
                (*where, key),
                f"unknown key {key!r} in {_label(where)}; "
                f"expected one of {', '.join(sorted(ROUTE_KEYS))}",
            )
    before = len(problems.items)
    route = _Route(value, where, problems)
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
        r.problem(None, "a route needs exactly one of topic, topics or topic_pattern")
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
        wrong = _topic_name(topic)
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
    if target not in TARGETS:
        r.problem(
            "target" if "target" in r.table else None,
            f"target must be one of {', '.join(TARGETS)}, not {_short(target)}",
        )
        return
    r.values["target"] = target


def _service_handler(r: _Route) -> None:
    for key in ("service", "handler"):
        value = r.table.get(key)
        if value is None:
            r.problem(None, f"{_label(r.where)} needs {key!r}")
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
        except (OverflowError, ValueError):
            r.problem("delay", f"delay: {_short(value)} is too long")
    if r.target == "workflow":
        r.problem("delay", "Restate does not support delays for workflows")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110, 5.6.2): what a header name may be."""


def _headers(r: _Route) -> None:
    """Kafka header names forwarded as HTTP headers: tokens, never one the bridge sets."""
    value = r.table.get("headers")
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        r.problem("headers", "headers must be a list of Kafka header names")
        return
    for name in value:
        if not _TOKEN.fullmatch(name):
            r.problem("headers", f"headers: {_short(name)} is not a valid HTTP header name")
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
    """Options read by their type hint alone: name, content_type, max_in_flight, on_null."""
    for key in ("name", "content_type", "max_in_flight", "on_null"):
        value = r.scalar(key)
        if value is not None:
            r.values[key] = value


_ROUTE_HINTS = _HINTS[RouteConfig]
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
)


# -- rules across the file --------------------------------------------------------------------

_Indexed = list[tuple[int, RouteConfig]]


def _dead_letter_loop(
    routes: _Indexed, dead_letter: DeadLetterConfig, delivery: DeliveryConfig, p: _Problems
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
    routes: _Indexed, dead_letter: DeadLetterConfig, delivery: DeliveryConfig, p: _Problems
) -> None:
    for index, route in routes:
        if isinstance(route.delay, timedelta) and route.delay > delivery.max_delay:
            p.add(
                ("routes", index, "delay"),
                f"delay {_human(route.delay)} is longer than [delivery] max_delay "
                f"({_human(delivery.max_delay)})",
            )


_FILE_RULES = (_dead_letter_loop, _delays_within_max)
