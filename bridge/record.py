"""A Kafka record as the bridge sees it, lazy access to its fields, and the HTTP rules its parts
must meet before they become part of a request.

Field paths are the vocabulary of routes.toml templates and matches: ``key``, ``key.hex``,
``key.base64``, ``topic``, ``partition``, ``offset``, ``timestamp``, ``header.NAME``, ``value`` and
``value.a.b`` (a JSON path; digits index arrays). The value is parsed as JSON once, and only when a
path needs it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

_MISSING = object()

RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "idempotency-key",
        "idempotency-expires",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
    }
)
"""Header names a route may not forward: the bridge or the HTTP layer sets them (lower case)."""
RESERVED_HEADER_PREFIX = "x-restate-"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# a run this long may be an integer beyond 64 bits, which orjson would read as a float
_LONG_DIGITS = re.compile(rb"\d{20,}")
_QUOTE_MAX = 40


def reserved_header(name: str) -> bool:
    """True for a header the bridge sets itself or that HTTP reserves (case-insensitive)."""
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIX)


def http_token(name: str) -> bool:
    """True when ``name`` is a valid HTTP field name (an RFC 9110 token)."""
    return _TOKEN.fullmatch(name) is not None


def header_value_ok(value: str) -> bool:
    """True for a value Restate and every HTTP hop accept: visible ASCII, space and tab only.

    HTTP also allows bytes 0x80-0xFF, but Restate answers 400 to a non-ASCII header value.
    """
    return _HEADER_VALUE.fullmatch(value) is not None


def excerpt(text: str) -> str:
    """``repr`` of ``text``, cut to a readable length: record data goes into reasons and logs."""
    if len(text) <= _QUOTE_MAX:
        return repr(text)
    return f"{text[:_QUOTE_MAX]!r}... ({len(text)} characters)"


def coordinates(topic: str, partition: int, offset: int) -> str:
    """``topic-partition@offset``, how every log line about one record names it."""
    return f"{topic}-{partition}@{offset}"


class FieldError(Exception):
    """A field a template or match needs is absent, or unusable (the value is not JSON, a key is
    not UTF-8, a rendered part is not a legal request part); the message names the field."""


@dataclass(frozen=True, slots=True)
class Record:
    """The parts of a Kafka record the bridge uses (aiokafka's ``ConsumerRecord`` has more)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        """The last header called ``name`` (Kafka allows repeats; the last one wins)."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    @property
    def coordinates(self) -> str:
        """``topic-partition@offset``, how logs name a record."""
        return coordinates(self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed field path such as ``header.kind``, ``key.hex`` or ``value.customer.id``."""

    text: str
    root: str
    parts: tuple[str, ...] = ()

    SCALAR_ROOTS = frozenset(
        {"key", "key.hex", "key.base64", "topic", "partition", "offset", "timestamp", "value"}
    )

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Raise ``ValueError`` with the accepted forms for an unknown path."""
        if text in cls.SCALAR_ROOTS:
            return cls(text, text)
        root, _, rest = text.partition(".")
        if root == "header" and rest:
            return cls(text, "header", (rest,))
        if root == "value" and rest:
            parts = tuple(rest.split("."))
            if all(parts):
                return cls(text, "value", parts)
        if root == "key":
            raise ValueError(f"unknown field {text!r}; use key, key.hex or key.base64")
        raise ValueError(
            f"unknown field {text!r}; use key, topic, partition, offset, timestamp, "
            "header.NAME, value or value.a.b"
        )

    @property
    def needs_json(self) -> bool:
        return self.root == "value" and bool(self.parts)


class RecordView:
    """One record plus its JSON value, parsed at most once."""

    __slots__ = ("_json", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self._json: Any = _MISSING

    def json(self) -> Any:
        if self._json is _MISSING:
            self._json = _load_json(self.record.value)
        return self._json

    def get(self, path: FieldPath) -> Any:
        """The field's value: ``bytes`` for key/value/headers, ``str`` for ``key.hex`` and
        ``key.base64``, ``int`` for numbers, JSON types for ``value.*``. Raises
        :class:`FieldError` when it is absent."""
        rec = self.record
        root = path.root
        if root == "header":
            found = rec.header(path.parts[0])
            if found is None:
                raise FieldError(f"header {path.parts[0]!r} is missing")
            return found
        if root == "value":
            if not path.parts:
                if rec.value is None:
                    raise FieldError("the record has no value")
                return rec.value
            node = self.json()
            for i, part in enumerate(path.parts):
                node = _step(node, part)
                if node is _MISSING:
                    where = ".".join(("value", *path.parts[: i + 1]))
                    raise FieldError(f"field {where!r} is missing from the JSON value")
            return node
        if root.startswith("key"):
            if rec.key is None:
                raise FieldError("the record has no key")
            if root == "key.hex":
                return rec.key.hex()
            if root == "key.base64":
                return base64.b64encode(rec.key).decode("ascii")
            return rec.key
        if root == "topic":
            return rec.topic
        if root == "partition":
            return rec.partition
        if root == "offset":
            return rec.offset
        return rec.timestamp

    def text(self, path: FieldPath) -> str:
        """The field as text, for templates: bytes are UTF-8, JSON scalars as written."""
        value = self.get(path)
        if path.root == "key" and isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise FieldError(
                    "key is not UTF-8 text; use {key.hex} or {key.base64} for binary keys"
                ) from None
        if path.root == "header":
            return as_text(value, f"header {path.parts[0]!r}")
        return as_text(value, path.text)


def _load_json(value: bytes | None) -> Any:
    if value is None:
        raise FieldError("the record has no value (a tombstone), so it has no JSON fields")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise FieldError(f"the record value is not JSON ({exc})") from exc
    if _LONG_DIGITS.search(value) is None:
        return doc
    # orjson reads an integer beyond 64 bits as a float, losing digits: read such a document
    # again with the standard library, which keeps integers exact (orjson has already checked
    # that it is strict JSON)
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # more than 4300 digits, or nested too deep
        raise FieldError(f"the record value cannot be read exactly ({exc})") from None


def _step(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit():
        index = int(part)
        return node[index] if index < len(node) else _MISSING
    return _MISSING


def as_text(value: Any, what: str) -> str:
    """``value`` as template text: bytes are UTF-8, JSON scalars and documents as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldError(f"{what} is not UTF-8 text") from exc
    if value is None:
        raise FieldError(f"{what} is null")
    return dump_json(value, what).decode()


def dump_json(value: Any, what: str) -> bytes:
    """``value`` (read from a record's JSON) as compact JSON, integers of any size exact."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (see _load_json)
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, RecursionError) as exc:
        raise FieldError(f"{what} cannot be written as JSON ({exc})") from None
