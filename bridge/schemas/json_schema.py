"""JSON Schema: the payload is JSON already; optionally validated against its schema."""

from __future__ import annotations

from typing import Any

import orjson

from ..core.inputs import BadInputSchema, compile_schema, first_error
from ..core.record import FieldError, load_json_exact
from .codec import BadSchema, PayloadError, SchemaType


class JsonSchemaCodec:
    schema_type: SchemaType = "JSON"

    def __init__(self, text: str, *, validate: bool) -> None:
        try:
            schema = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadSchema(f"the JSON Schema is not JSON: {exc}") from None
        self._validator: Any = None
        if validate:
            try:
                self._validator = compile_schema(schema)
            except BadInputSchema as exc:
                raise BadSchema(f"not a valid JSON Schema: {exc}") from None

    def decode(self, payload: memoryview) -> Any:
        try:
            data = load_json_exact(bytes(payload))
        except FieldError as exc:
            raise PayloadError(str(exc)) from None
        if self._validator is not None and (found := first_error(self._validator, data)):
            where = "/".join(str(p) for p in found[0]) or "(root)"
            raise PayloadError(
                f"does not validate against its JSON Schema at {where}: {found[1][:200]}"
            )
        return data
