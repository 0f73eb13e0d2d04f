"""A Kafka record as the bridge sees it, lazy access to its fields, and the HTTP rules its parts
must meet before they become part of a request.

Field paths are the vocabulary of routes.toml templates and matches: ``key``, ``key.hex``,
``key.base64``, ``key.a.b`` (a path into a decoded key), ``topic``, ``partition``, ``offset``,
``timestamp``, ``header.NAME``, ``value`` and ``value.a.b`` (a JSON path; digits index arrays).
The value is parsed as JSON once, and only when a path needs it.

How a route reads the key and the value is its ``key_format`` / ``value_format``: ``json`` (the
value's default: JSON text), ``raw`` (the key's default: bytes, ``{key}`` as UTF-8), or a format a
schema registry serializer framed (``avro``, ``protobuf``, ``json_schema``). A framed field is
decoded before planning (:mod:`bridge.schemas`) and travels with the record as :class:`Decoded`;
the view of a route with a framed format reads that JSON-compatible data instead of the bytes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

_MISSING = object()

Format = Literal["json", "avro", "protobuf", "json_schema", "raw"]
FORMATS: tuple[Format, ...] = ("json", "avro", "protobuf", "json_schema", "raw")
FRAMED_FORMATS: frozenset[str] = frozenset({"avro", "protobuf", "json_schema"})
"""Formats written by a schema registry serializer: magic byte, schema id, payload."""
_SCHEMA_TYPES = {"avro": "AVRO", "protobuf": "PROTOBUF", "json_schema": "JSON"}

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


class DecodeError(FieldError):
    """The key or value cannot be read in the route's format (not framed, unknown schema, a
    payload that does not match its schema, a key that is not JSON): the record is poison for
    that route even where a missing field would only be a mismatch."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A framed key or value read with its writer's schema: JSON-compatible ``data``, or the
    ``error`` that says why it cannot be (without the field's name: the view adds it)."""

    schema_type: str | None = None
    """``AVRO``, ``PROTOBUF`` or ``JSON`` (the registry's ``schemaType``); None when unframed."""
    schema_id: int | None = None
    data: Any = None
    error: str | None = None


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
    key_data: Decoded | None = None
    """The key decoded with its writer's schema, when a route reads it in a framed format."""
    value_data: Decoded | None = None
    """The value decoded likewise."""

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

    def age(self, now: float) -> float | None:
        """Seconds since the record's timestamp at ``now`` (seconds since the epoch); ``None``
        when it has none (Kafka writes -1)."""
        if self.timestamp is None or self.timestamp <= 0:
            return None
        return now - self.timestamp / 1000


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
        if root in ("value", "key") and rest:
            parts = tuple(rest.split("."))
            # key.hex.x would read as the hex form's field: never a field of a decoded key
            if all(parts) and not (root == "key" and parts[0] in ("hex", "base64")):
                return cls(text, root, parts)
        if root == "key":
            raise ValueError(f"unknown field {text!r}; use key, key.hex, key.base64 or key.a.b")
        raise ValueError(
            f"unknown field {text!r}; use key, topic, partition, offset, timestamp, "
            "header.NAME, value or value.a.b"
        )

    @property
    def needs_json(self) -> bool:
        return self.root == "value" and bool(self.parts)

    @property
    def key_field(self) -> bool:
        """A path into a decoded key (``key.a.b``); needs a ``key_format`` other than raw."""
        return self.root == "key" and bool(self.parts)


class RecordView:
    """One record as a route with ``value_format`` / ``key_format`` reads it; the JSON value
    and key are parsed at most once."""

    __slots__ = ("_json", "_key_json", "key_format", "record", "value_format")

    def __init__(
        self, record: Record, value_format: Format = "json", key_format: Format = "raw"
    ) -> None:
        self.record = record
        self.value_format = value_format
        self.key_format = key_format
        self._json: Any = _MISSING
        self._key_json: Any = _MISSING

    def formatted(self, value_format: Format, key_format: Format) -> RecordView:
        """This record as a route with these formats reads it (self when they are the same)."""
        if value_format == self.value_format and key_format == self.key_format:
            return self
        view = RecordView(self.record, value_format, key_format)
        if value_format == self.value_format:
            view._json = self._json
        return view

    def json(self) -> Any:
        """The value as JSON data: parsed text, or decoded with its writer's schema."""
        if self._json is _MISSING:
            fmt = self.value_format
            if fmt == "json":
                self._json = _load_json(self.record.value)
            elif fmt == "raw":
                raise FieldError('the route reads the value as raw bytes (value_format = "raw")')
            else:
                self._json = _decoded("value", fmt, self.record.value, self.record.value_data)
        return self._json

    def key_json(self) -> Any:
        """The key as data, for a ``key_format`` other than raw."""
        if self._key_json is _MISSING:
            fmt, key = self.key_format, self.record.key
            if key is None:
                raise FieldError("the record has no key")
            if fmt == "json":
                try:
                    self._key_json = load_json_exact(key, "the record key")
                except FieldError as exc:
                    raise DecodeError(str(exc)) from None
            elif fmt == "raw":
                raise FieldError('the route reads the key as raw bytes (key_format = "raw")')
            else:
                self._key_json = _decoded("key", fmt, key, self.record.key_data)
        return self._key_json

    def check_decoded(self) -> None:
        """Raise :class:`DecodeError` when a framed key or value of this route cannot be read."""
        if self.value_format in FRAMED_FORMATS and self.record.value is not None:
            self.json()
        if self.key_format in FRAMED_FORMATS and self.record.key is not None:
            self.key_json()

    def body(self) -> bytes | None:
        """The value as a ``{value}`` body sends it: the bytes, or the JSON of a decoded value."""
        value = self.record.value
        if value is None or self.value_format not in FRAMED_FORMATS:
            return value
        return dump_json(self.json(), "the decoded value")

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
                if self.value_format in FRAMED_FORMATS:
                    return self.json()
                return rec.value
            return _walk(self.json(), path, "JSON value")
        if root.startswith("key"):
            if rec.key is None:
                raise FieldError("the record has no key")
            if root == "key.hex":
                return rec.key.hex()
            if root == "key.base64":
                return base64.b64encode(rec.key).decode("ascii")
            if path.parts:
                return _walk(self.key_json(), path, "decoded key")
            if self.key_format != "raw":
                return self.key_json()
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


def _walk(node: Any, path: FieldPath, what: str) -> Any:
    for i, part in enumerate(path.parts):
        node = _step(node, part)
        if node is _MISSING:
            where = ".".join((path.root, *path.parts[: i + 1]))
            raise FieldError(f"field {where!r} is missing from the {what}")
    return node


def _decoded(what: str, fmt: str, raw: bytes | None, decoded: Decoded | None) -> Any:
    """The data of a framed key or value; :class:`DecodeError` naming ``what`` if unusable."""
    if raw is None:
        raise FieldError(f"the record has no {what} (a tombstone), so it has no fields")
    if decoded is None:  # `check` refuses a framed format without [schema_registry]
        raise DecodeError(f"{what}: {fmt} needs the schema registry, and it was not decoded")
    if decoded.error is not None:
        raise DecodeError(f"{what}: {decoded.error}")
    if decoded.schema_type != _SCHEMA_TYPES[fmt]:
        raise DecodeError(
            f"{what}: written with a {decoded.schema_type} schema (id {decoded.schema_id}), "
            f"but the route says {what}_format = {fmt!r}"
        )
    return decoded.data


def _load_json(value: bytes | None) -> Any:
    if value is None:
        raise FieldError("the record has no value (a tombstone), so it has no JSON fields")
    return load_json_exact(value, "the record value")


def load_json_exact(value: bytes, what: str = "the payload") -> Any:
    """``value`` parsed as JSON, integers of any size exact; :class:`FieldError` naming ``what``
    when it is not JSON."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise FieldError(f"{what} is not JSON ({exc})") from exc
    if _LONG_DIGITS.search(value) is None:
        return doc
    # orjson reads an integer beyond 64 bits as a float, losing digits: read such a document
    # again with the standard library, which keeps integers exact (orjson has already checked
    # that it is strict JSON)
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # more than 4300 digits, or nested too deep
        raise FieldError(f"{what} cannot be read exactly ({exc})") from None


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
    if type(value) is int:  # partition, offset, timestamp: what dump_json writes, without it
        try:
            return str(value)
        except ValueError:  # beyond Python's 4,300 digits: dump_json says why
            pass
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
