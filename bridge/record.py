"""A Kafka record as the bridge sees it, and lazy access to its fields.

Field paths are the vocabulary of routes.toml templates and matches: ``key``, ``topic``,
``partition``, ``offset``, ``timestamp``, ``header.NAME``, ``value`` and ``value.a.b`` (a JSON path;
digits index arrays). The value is parsed as JSON once, and only when a path needs it.
"""

from __future__ import annotations

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
"""HTTP headers the bridge sets itself, or that frame the request: never forwarded from a record."""


def reserved_header(name: str) -> bool:
    """True for a header a route may not forward: :data:`RESERVED_HEADERS` and ``x-restate-*``,
    compared case-insensitively."""
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith("x-restate-")


class FieldError(Exception):
    """A field a template or match needs is absent, or the value is not JSON; names the field."""


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


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed field path such as ``header.kind`` or ``value.customer.id``."""

    text: str
    root: str
    parts: tuple[str, ...] = ()

    SCALAR_ROOTS = frozenset({"key", "topic", "partition", "offset", "timestamp", "value"})

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Raise ``ValueError`` with the accepted forms for an unknown path."""
        root, dot, rest = text.partition(".")
        if root == "header" and rest:
            return cls(text, "header", (rest,))
        if root == "value" and rest:
            parts = tuple(rest.split("."))
            if all(parts):
                return cls(text, "value", parts)
        if root in cls.SCALAR_ROOTS and not dot:
            return cls(text, root)
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
            if self.record.value is None:
                raise FieldError("the record has no value (a tombstone), so it has no JSON fields")
            try:
                self._json = orjson.loads(self.record.value)
            except orjson.JSONDecodeError as exc:
                raise FieldError(f"the record value is not JSON ({exc})") from exc
        return self._json

    def get(self, path: FieldPath) -> Any:
        """The field's value: ``bytes`` for key/value/headers, ``int`` for numbers, JSON types for
        ``value.*``. Raises :class:`FieldError` when it is absent."""
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
        if root == "key":
            if rec.key is None:
                raise FieldError("the record has no key")
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
        return as_text(self.get(path), path.text)


def _step(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit():
        index = int(part)
        return node[index] if index < len(node) else _MISSING
    return _MISSING


def as_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldError(f"{what} is not UTF-8 text") from exc
    if value is None:
        raise FieldError(f"{what} is null")
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value).decode()
