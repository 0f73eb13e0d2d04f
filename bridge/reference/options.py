"""Every option of the routing file as one model, read from :mod:`bridge.config.schema`: the
tables' field hints and markers, and the fields' docstrings (read from the source, as
documentation tools do: Python keeps no attribute docstrings at run time).

The scalar tables are read by their type hints, so their value schemas come from those hints,
mirroring :func:`bridge.config.reading.read_value`. ``[[routes]]`` is read by named rules
(:mod:`bridge.config.routes`), so the keys those rules read are described here, once, by the
JSON Schema of what a rule accepts.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import types
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from ..config import schema
from ..config.schema import (
    ENV_OVERRIDES,
    HINTS,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_BATCH_WAIT,
    MIN_BATCH_BYTES,
    POSITIVE_DURATION,
    POSITIVE_INT,
    ROUTE_ONLY_KEYS,
    SECTIONS,
    TARGETS,
    Check,
    CommaList,
    Range,
    RouteConfig,
)
from ..core.durations import format_duration
from ..core.status_policy import HIGHEST, LOWEST

# -- value schemas ------------------------------------------------------------------------------

DURATION_PATTERN = (
    # \d as the loader's: any Unicode digit where the validator's regex has them (Python, Rust)
    r"^\s*(?:"
    # ISO 8601, any case, at least one number: P1D, PT2S, P1DT1.5H
    r"[Pp](?=\D*\d)(?:\d+(?:\.\d+)?[Dd])?"
    r"(?:[Tt](?:\d+(?:\.\d+)?[Hh])?(?:\d+(?:\.\d+)?[Mm])?(?:\d+(?:\.\d+)?[Ss])?)?"
    # or numbers with units: 4s, 500ms, 1h30m, 2.5s; the loader drops spaces before reading
    r"|(?:\d[\d ]*(?:\.[ ]*\d[\d ]*)?\s*(?:m[ ]*s|[smhd])[ ]*)+"
    r")\s*$"
)
"""The grammar of :func:`bridge.core.durations.parse_duration`; its bounds are each key's own."""

DURATION: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
SIZE_PATTERN = r"^\s*\d+\s*(?:B|KiB|MiB|KB|MB)?\s*$"
"""The grammar of :func:`bridge.config.schema.parse_size`."""
_TOPIC: dict[str, Any] = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9._-]{1,249}$",
    "not": {"enum": [".", ".."]},
}
_STATUS = {
    "anyOf": [
        {"type": "integer", "minimum": LOWEST, "maximum": HIGHEST},
        {"type": "string", "pattern": r"^\s*[45][Xx][Xx]\s*$"},
        {"type": "string", "pattern": r"^\s*[45][0-9][0-9](?:\s*-\s*[45][0-9][0-9])?\s*$"},
    ]
}
_PORT = r"0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_URL = r"\s*https?://[^/?#,][^,]*"
CHECK_SCHEMAS: dict[Any, dict[str, Any]] = {
    schema.variable_name_problem: {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
    schema.topic_name_problem: {"pattern": _TOPIC["pattern"], "not": _TOPIC["not"]},
    schema.correlation_header_problem: {"pattern": r"^(?![Bb][Rr][Ii][Dd][Gg][Ee]\.)[!-~]{1,255}$"},
    schema.header_value_problem: {"pattern": r"^[^\x00-\x08\x0A-\x1F\x7F]*$"},
    # host:port, the host not only brackets ([::1]:80), the port 0 to 65535
    schema.host_port_problem: {"pattern": rf"^[\s\S]*[^\[\]][\s\S]*:{_PORT}$"},
    # http(s):// and something after it, each entry of a comma-separated list
    schema.ingress_urls_problem: {"pattern": rf"^{_URL}(?:,{_URL})*$"},
    schema.registry_url_problem: {"pattern": r"^https?://[^/?#]"},
}
"""The part of a :class:`Check` rule a schema says (the rest is left to ``restate-bridge
check``): never stricter than the rule."""
_NON_EMPTY: dict[str, Any] = {"type": "string", "minLength": 1}
_HTTP_TOKEN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
"""A header name, as :func:`bridge.core.record.http_token` reads it."""


def _unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """The base type of a field's hint and its markers, as the reader unwraps them."""
    markers: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        markers, hint = get_args(hint)[1:], get_args(hint)[0]
    if get_origin(hint) in (Union, types.UnionType):  # X | None: written means X
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is Annotated:
        markers += get_args(hint)[1:]
        hint = get_args(hint)[0]
    return hint, markers


def value_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a value :func:`bridge.config.reading.read_value` accepts for ``hint``."""
    base, markers = _unwrap(hint)
    bounds = next((m for m in markers if isinstance(m, Range)), None)
    if get_origin(base) is Literal:
        return {"type": "string", "enum": list(get_args(base))}
    if base is bool:
        return {"type": "boolean"}
    if base is int:
        bounds = bounds or POSITIVE_INT
        return {"type": "integer", "minimum": bounds.low, "maximum": bounds.high}
    if base is timedelta:
        return dict(DURATION)
    if base is not str:  # pragma: no cover - a type the reader does not read either
        raise TypeError(f"no schema for {hint!r}")
    text = dict(_NON_EMPTY)
    for marker in markers:
        if isinstance(marker, Check):
            text.update(CHECK_SCHEMAS.get(marker.rule, {}))
    if any(isinstance(m, CommaList) for m in markers):
        listed = {"type": "array", "items": text, "minItems": 1}
        return {"anyOf": [text, listed]}
    return text


def type_text(hint: Any) -> str:
    """The type as a user writes it in TOML."""
    base, markers = _unwrap(hint)
    if any(isinstance(m, CommaList) for m in markers):
        return "string or array of strings"
    return {bool: "boolean", int: "integer", timedelta: "duration", str: "string"}.get(
        base, "string"
    )


def allowed_text(hint: Any) -> str:
    """The values a hint allows, in words (empty: any value of its type)."""
    base, markers = _unwrap(hint)
    bounds = next((m for m in markers if isinstance(m, Range)), None)
    if get_origin(base) is Literal:
        return ", ".join(f"`{c}`" for c in get_args(base))
    if base is int:
        bounds = bounds or POSITIVE_INT
        return f"{bounds.low} to {bounds.high}"
    if base is timedelta:
        bounds = bounds or POSITIVE_DURATION
        if bounds.low == POSITIVE_DURATION.low:
            return f"longer than 0s, at most {format_duration(bounds.high)}"
        return f"{format_duration(bounds.low)} to {format_duration(bounds.high)}"
    return ""


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One key of a table: how it is written, its default and what it does."""

    key: str
    schema: dict[str, Any]
    """The JSON Schema of its value as written in TOML (without the description)."""
    type: str
    doc: str
    default: Any = None
    """The default as written in TOML (``None``: none, or one that depends on other keys)."""
    default_text: str = "none"
    allowed: str = ""
    required: bool = False
    variable: str | None = None
    """The environment variable that overrides it."""


@dataclass(frozen=True)
class Table:
    """A table of the routing file and its keys."""

    name: str
    doc: str
    options: tuple[Option, ...]
    secrets: tuple[tuple[str, str], ...] = ()
    """``(name, doc)`` of each secret resolved from a ``NAME_env`` / ``NAME_file`` pair."""

    @property
    def heading(self) -> str:
        return "[[routes]]" if self.name == "routes" else f"[{self.name}]"


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring under each annotated field of a dataclass, from its source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        value = after.value if isinstance(after, ast.Expr) else None
        text = value.value if isinstance(value, ast.Constant) else None
        if isinstance(text, str):
            docs[node.target.id] = one_paragraph(text)
    return docs


def one_paragraph(text: str) -> str:
    """A docstring as one line of Markdown: ``code`` as `code`, roles dropped."""
    text = " ".join(inspect.cleandoc(text).split())
    text = re.sub(r":(?:mod|func|class|meth|attr):`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def toml_default(value: Any) -> Any:
    """A field's default as written in TOML, or ``None`` when it has none to write."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, timedelta):
        return format_duration(value)
    return None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _option(cls: type[Any], table: str, spec: dataclasses.Field[Any], doc: str) -> Option:
    hint = HINTS[cls][spec.name]
    required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    default = None if required else toml_default(spec.default)
    variable = ENV_OVERRIDES.get((table, spec.name))
    if required and variable:
        default_text = f"required (or `{variable}`)"
    else:
        default_text = "required" if required else "none" if default is None else _shown(default)
    return Option(
        key=spec.name,
        schema=value_schema(hint),
        type=type_text(hint),
        doc=doc,
        default=default,
        default_text=default_text,
        allowed=allowed_text(hint),
        # a variable may stand in for a required key: the file alone need not name it
        required=required and variable is None,
        variable=variable,
    )


def scalar_table(name: str, cls: type[Any]) -> Table:
    """A table read by its type hints."""
    docs = field_docs(cls)
    options, secrets = [], []
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("from_env"):
            secrets.append((spec.name, docs.get(spec.name, "")))
        else:
            options.append(_option(cls, name, spec, docs.get(spec.name, "")))
    written = cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}(")  # not dataclass's
    doc = one_paragraph(cls.__doc__ or "") if written else ""
    return Table(name, doc, tuple(options), tuple(secrets))


def tables() -> tuple[Table, ...]:
    """Every table of the routing file, ``[[routes]]`` last."""
    return (*(scalar_table(n, c) for n, c in SECTIONS.items()), routes_table())


# -- [[routes]] ---------------------------------------------------------------------------------

_BATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_records": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_RECORDS},
        "max_bytes": {
            "anyOf": [
                {"type": "integer", "minimum": MIN_BATCH_BYTES, "maximum": MAX_BATCH_BYTES},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        },
        "max_wait": dict(DURATION),
    },
}
_TEMPLATE = dict(_NON_EMPTY)
_ONE_SOURCE = "one of `topic`, `topics`, `topic_pattern` required"
ROUTE_VALUES: dict[str, tuple[dict[str, Any], str, str]] = {
    # key: (schema, type as written, default as written) of the keys named rules read
    "topic": (_TOPIC, "string", _ONE_SOURCE),
    "topics": ({"type": "array", "items": _TOPIC, "minItems": 1}, "array of strings", _ONE_SOURCE),
    "topic_pattern": (_NON_EMPTY, "string (regex)", _ONE_SOURCE),
    "target": ({"type": "string", "enum": list(TARGETS)}, "string", "required"),
    "service": (_NON_EMPTY, "string", "required"),
    "handler": (_NON_EMPTY, "string", "required"),
    "key": (_TEMPLATE, "template", "required for object and workflow"),
    "match": (
        {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "inline table",
        "none",
    ),
    "delay": (
        {"type": "string", "anyOf": [{"pattern": DURATION_PATTERN}, {"pattern": r"\{"}]},
        "duration or template",
        "none",
    ),
    "headers": (
        {"type": "array", "items": {"type": "string", "pattern": _HTTP_TOKEN}},
        "array of strings",
        "`[]`",
    ),
    "idempotency_key": (_TEMPLATE, 'template or `"none"`', '`"{topic}-{partition}-{offset}"`'),
    "workflow_main": ({"type": "boolean"}, "boolean", "true for a workflow's `run` / `Run`"),
    "body": (_TEMPLATE, 'template or `"none"`', '`"{value}"`'),
    "batch": (_BATCH, "inline table", "none"),
    "retry_on": ({"type": "array", "items": _STATUS}, "array of statuses", "`[]`"),
    "dead_letter_on": ({"type": "array", "items": _STATUS}, "array of statuses", "`[]`"),
    "block_on": ({"type": "array", "items": _STATUS}, "array of statuses", "`[]`"),
    "rate_limit": ({"type": "number", "minimum": 0.001, "maximum": 1_000_000}, "number", ""),
    "scope": (_TEMPLATE, "template", "none"),
    "limit_key": (_TEMPLATE, "template", "none"),
}
_ROUTE_DEFAULTS = {
    "name": '`"Service.handler"`',
    "ordering": "`key` for object and workflow, `none` for service",
    "max_in_flight": "unlimited",
    "rate_limit": "unlimited",
    "rate_limit_burst": "one second's worth, at least 1",
    "reply_timeout": "`[delivery] reply_timeout`",
    "max_record_age": "any age",
}
ROUTE_ORDER = (
    *("name", "topic", "topics", "topic_pattern", "target", "service", "handler", "key"),
    *("match", "delay", "headers", "idempotency_key", "workflow_main", "body", "content_type"),
    *("ordering", "max_in_flight", "on_null", "value_format", "key_format", "reply_topic"),
    *("reply_correlation_header", "reply_timeout", "batch", "retry_on", "dead_letter_on"),
    *("block_on", "rate_limit", "rate_limit_burst", "scope", "limit_key", "trace_context"),
    *("validate_input", "max_record_age", "on_record_too_old"),
)
"""The keys in the order the reference lists them (a test holds it equal to ``ROUTE_KEYS``)."""


def routes_table() -> Table:
    """``[[routes]]``: the hints of the keys read by their hint, the table above for the rest."""
    docs = {**field_docs(RouteConfig), **ROUTE_ONLY_KEYS}
    fields = {f.name: f for f in dataclasses.fields(RouteConfig)}
    options = []
    for key in ROUTE_ORDER:
        doc = one_paragraph(docs.get(key, ""))
        if key in ROUTE_VALUES:
            value, type_, default_text = ROUTE_VALUES[key]
            options.append(
                Option(
                    key,
                    value,
                    type_,
                    doc,
                    default_text=_ROUTE_DEFAULTS.get(key, default_text or "none"),
                    allowed=_route_allowed(key),
                    required=default_text == "required",
                )
            )
            continue
        option = _option(RouteConfig, "routes", fields[key], doc)
        if key in _ROUTE_DEFAULTS:
            option = dataclasses.replace(option, default=None, default_text=_ROUTE_DEFAULTS[key])
        options.append(dataclasses.replace(option, required=False))
    return Table("routes", one_paragraph(RouteConfig.__doc__ or ""), tuple(options))


def _route_allowed(key: str) -> str:
    if key == "target":
        return ", ".join(f"`{t}`" for t in TARGETS)
    if key in ("retry_on", "dead_letter_on", "block_on"):
        return f'{LOWEST} to {HIGHEST}: `409`, `"5xx"`, `"400-404"`'
    if key == "rate_limit":
        return "0.001 to 1000000"
    if key == "batch":
        wait = format_duration(MAX_BATCH_WAIT)
        return (
            f"`max_records` 1 to {MAX_BATCH_RECORDS}, `max_bytes` 1KiB to 64MiB, "
            f"`max_wait` 0s to {wait}"
        )
    return ""
