"""Avro: a payload read with its writer's schema, as the plain JSON variant. Pure.

The mapping (docs/schema-registry.md):

- records and maps are objects, arrays are arrays, enums their symbol (a string);
- a union is unwrapped to the branch's value (``{"a": 5}``, not ``{"a": {"int": 5}}``); which
  named type a union held is not kept, so records in one union should carry a field that tells
  them apart;
- ``bytes`` and ``fixed`` are base64 (standard alphabet, padded);
- ``decimal`` is a string of its exact digits (``"12.30"``), never a float;
- ``timestamp-millis`` / ``-micros`` are ISO-8601 UTC strings (``"2024-01-02T03:04:05.123Z"``),
  ``local-timestamp-*`` the same without a zone, ``date`` ``"2024-01-02"``, ``time-*``
  ``"03:04:05.123"``, ``uuid`` its string; NaN and infinite floats are ``"NaN"``, ``"Infinity"``
  and ``"-Infinity"`` (as in Protobuf's JSON).
"""

from __future__ import annotations

import base64
import io
import math
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import fastavro
import orjson

from .codec import BadSchema, PayloadError, SchemaType


class AvroCodec:
    schema_type: SchemaType = "AVRO"

    def __init__(self, text: str, references: list[str]) -> None:
        """``text`` is the schema, ``references`` the texts of the schemas it names (in the
        order they must be parsed: dependencies first)."""
        named: dict[str, Any] = {}
        try:
            for ref in references:
                fastavro.parse_schema(orjson.loads(ref), named_schemas=named)
            self._schema = fastavro.parse_schema(orjson.loads(text), named_schemas=named)
        except Exception as exc:  # fastavro raises many types for a bad schema
            raise BadSchema(f"not a usable Avro schema: {type(exc).__name__}: {exc}") from None

    def decode(self, payload: memoryview) -> Any:
        buffer = io.BytesIO(payload)
        try:
            datum = fastavro.schemaless_reader(buffer, self._schema, None)
        except Exception as exc:  # untrusted bytes: EOFError, ValueError, UnicodeDecodeError...
            raise PayloadError(f"{type(exc).__name__}: {exc}") from None
        left = len(payload) - buffer.tell()
        if left:
            raise PayloadError(f"{left} bytes are left over after the datum")
        return to_json(datum)


def to_json(value: Any) -> Any:
    """A value fastavro read, as JSON-compatible data (the module docstring's mapping)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple):  # a named type in a union, when asked for (not by us)
        return [to_json(v) for v in value]
    raise PayloadError(f"no JSON form for an Avro value of type {type(value).__name__}")
