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


def compile_schema(schema: Any) -> Any:
    """A ``jsonschema`` validator for ``schema`` (its own draft); :class:`BadInputSchema` says
    why when it is no JSON Schema. Needs the schemas extra."""
    import jsonschema  # the schemas extra; `check` says when it is missing

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadInputSchema(exc.message) from None
    return cls(schema)


def first_error(validator: Any, data: Any) -> tuple[tuple[Any, ...], str] | None:
    """Where ``data`` breaks the schema and how (the most relevant error), or ``None``."""
    if validator.is_valid(data):  # the common case: one pass, no error objects
        return None
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    return None if error is None else (tuple(error.absolute_path), error.message)


class InputCheck:
    """One handler's input schema, compiled once; :meth:`problem` says what is wrong with a
    body, or ``None``."""

    def __init__(self, schema: Any) -> None:
        try:
            self._validator = compile_schema(schema)
        except BadInputSchema as exc:
            raise BadInputSchema(f"not a JSON Schema: {exc}") from None

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
        found = first_error(self._validator, data)
        return None if found is None else f"{json_path(found[0])}: {found[1]}"


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
