"""What every format's codec is: a parsed writer's schema that turns payloads into JSON data.

Errors, by what the caller does next (all end in a dead letter for the record that met them)::

    ValueError
    ├── BadSchema      the registry's schema cannot be used (cached for its id)
    └── PayloadError   this payload does not match its schema
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

SchemaType = Literal["AVRO", "PROTOBUF", "JSON"]
FORMATS: dict[str, SchemaType] = {"avro": "AVRO", "protobuf": "PROTOBUF", "json_schema": "JSON"}
"""Route format -> the ``schemaType`` the registry reports for it."""
FORMAT_OF: dict[str, str] = {v: k for k, v in FORMATS.items()}


class BadSchema(ValueError):
    """The registry's schema cannot be parsed or compiled; the message says why."""


class PayloadError(ValueError):
    """A payload that does not match its writer's schema; the message says where it broke."""


class Codec(Protocol):
    schema_type: SchemaType

    def decode(self, payload: memoryview) -> Any:
        """The payload as JSON-compatible data; raises :class:`PayloadError`."""
        ...
