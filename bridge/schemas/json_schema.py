"""JSON Schema: the payload is JSON already; optionally validated against its schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

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
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise BadSchema(f"not a valid JSON Schema: {exc.message}") from None
            self._validator = cls(schema)

    def decode(self, payload: memoryview) -> Any:
        try:
            data = load_json_exact(bytes(payload))
        except FieldError as exc:
            raise PayloadError(str(exc)) from None
        if self._validator is not None:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                raise PayloadError(
                    f"does not validate against its JSON Schema at {where}: {error.message[:200]}"
                )
        return data
