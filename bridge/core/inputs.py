"""A handler's input checked before it is sent: ``validate_input = true`` on a route.

Restate publishes each handler's ``input_json_schema`` (from the SDK: zod, pydantic, ...). A body
that does not match it would fail in the handler, after Restate accepted it and the offset was
committed; checked here, it becomes a dead letter whose reason names the JSON path and the rule
(``$.amount: 'abc' is not of type 'integer'``). Needs ``jsonschema`` (the ``schemas`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .record import excerpt


class BadInputSchema(ValueError):
    """A published schema that is not a JSON Schema: nothing can be checked against it."""


class InputCheck:
    """One handler's input schema, compiled once; :meth:`problem` says what is wrong with a
    body, or ``None``."""

    def __init__(self, schema: Any) -> None:
        import jsonschema  # the schemas extra; `check` says when it is missing

        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise BadInputSchema(f"not a JSON Schema: {exc.message}") from None
        self._validator = cls(schema)
        self._best_match = jsonschema.exceptions.best_match

    def problem(self, body: bytes | None) -> str | None:
        """``$.path: what is wrong`` when ``body`` (JSON) does not match; ``None`` when it does.
        A body that is not JSON at all is named as such."""
        if body is None:
            data: Any = None
        else:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return f"$: not JSON ({exc}): {excerpt(body.decode('utf-8', 'replace'))}"
        validator = self._validator
        if validator.is_valid(data):  # the common case: one pass, no error objects
            return None
        error = self._best_match(validator.iter_errors(data))
        if error is None:
            return None
        return f"{json_path(error.absolute_path)}: {error.message}"


def input_refused(service: str, handler: str, problem: str) -> str:
    """The dead letter's reason for a body ``service/handler``'s schema refuses."""
    return f"input refused by {service}/{handler}'s schema: {problem}"


def checkable(schema: Any) -> bool:
    """Whether a published schema constrains anything (``true``, ``{}`` and none do not)."""
    return (isinstance(schema, dict) and bool(schema)) or schema is False


def json_path(parts: Iterable[Any]) -> str:
    """``["amount"]`` -> ``$.amount``; ``["items", 2, "a b"]`` -> ``$.items[2]['a b']``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out
