"""Typed outputs: an answer's body decoded into the type a caller names with ``output=``. Pure.

    output=None        JSON decoded to dict/list/str/int/float/bool/None; other bodies as bytes
    output=bytes       the body exactly as the ingress returned it, JSON included
    output=str         a JSON string; or a non-JSON body as UTF-8 text
    output=int, float, bool, type(None), list[X], dict[str, X], tuple[X, ...], X | None, Literal
    output=SomeEnum    its value
    output=Dataclass   a JSON object; fields by name, nested types followed, unknown keys ignored
                       (as Go's encoding/json does), a missing field without default is an error
    output=TypedDict   a JSON object with every required key, value types checked
    output=Model       a pydantic model, through ``Model.model_validate`` (pydantic itself is not
                       a dependency: any class with ``model_validate`` is used that way)

A body that does not fit raises ``DecodeError`` (an ``IngressError``). A type the decoder
cannot build at all raises ``TypeError`` from ``check_output_type``, before anything is sent.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    is_typeddict,
)

import orjson

from ._codec import JSON, decode_output
from ._errors import DecodeError

_PRIMITIVES: tuple[type, ...] = (str, int, float, bool, type(None))


class _Mismatch(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def check_output_type(output: Any) -> None:
    """Raise ``TypeError`` when ``output`` is not a type ``decode_as`` can build."""
    if output is None or output is bytes:
        return
    _check(output, set())


def _check(tp: Any, seen: set[int]) -> None:
    if tp is Any or tp is object or tp in _PRIMITIVES or tp is None:
        return
    if id(tp) in seen:  # a recursive dataclass
        return
    origin = get_origin(tp)
    if origin in (Annotated, Required, NotRequired):
        _check(get_args(tp)[0], seen)
        return
    if origin in (Union, types.UnionType, list, tuple, dict, Sequence, Mapping):
        for arg in get_args(tp):
            if arg is not Ellipsis:
                _check(arg, seen)
        return
    if origin is Literal or tp in (list, dict, tuple):
        return
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return
    if _is_model(tp):
        return
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or is_typeddict(tp)):
        seen.add(id(tp))
        for hint in _hints(tp).values():
            _check(hint, seen)
        return
    raise TypeError(
        f"output={_name(tp)} is not a type the ingress client can decode into; use bytes, str, "
        "a JSON primitive, list/dict/tuple of them, an Enum, a dataclass, a TypedDict or a "
        "pydantic model"
    )


def decode_as(
    body: bytes,
    content_type: str | None,
    output: Any,
    *,
    invocation_id: str | None = None,
) -> Any:
    """``body`` as ``output`` (see the module docstring); ``DecodeError`` if it won't fit."""
    try:
        if output is None:
            return decode_output(body, content_type)
        if output is bytes:
            return body
        is_json = content_type is None or content_type.startswith(JSON)
        if not is_json:
            if output is str:
                return body.decode("utf-8")
            raise _Mismatch("$", f"the answer is {content_type}, not JSON")
        value = orjson.loads(body) if body else None
        return _convert(value, output, "$")
    except (_Mismatch, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        what = "the answer" if output is None else f"the answer into {_name(output)}"
        raise DecodeError(
            f"cannot decode {what}: {exc} (body: {body[:200]!r})",
            body=body,
            invocation_id=invocation_id,
        ) from exc


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    type(None): (lambda v: v is None, "null"),
    bool: (lambda v: isinstance(v, bool), "a boolean"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}
"""JSON's scalar types: how to recognise each, and its name in a mismatch."""


def _convert(value: Any, tp: Any, where: str) -> Any:
    if tp is Any or tp is object:
        return value
    if tp is None:
        tp = type(None)
    if isinstance(tp, type) and (scalar := _SCALARS.get(tp)) is not None:
        fits, name = scalar
        if not fits(value):
            raise _Mismatch(where, f"expected {name}, got {_describe(value)}")
        return float(value) if tp is float else value
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Annotated, Required, NotRequired):
        return _convert(value, args[0], where)
    if origin in (Union, types.UnionType):
        problems = []
        for arm in args:
            try:
                return _convert(value, arm, where)
            except _Mismatch as exc:
                problems.append(str(exc).removeprefix(f"{where}: "))
        raise _Mismatch(where, f"fits none of {_name(tp)} ({'; '.join(problems)})")
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise _Mismatch(where, f"expected one of {list(args)!r}, got {_describe(value)}")
        return value
    if tp in (list, tuple) or origin in (list, tuple, Sequence):
        if not isinstance(value, list):
            raise _Mismatch(where, f"expected an array, got {_describe(value)}")
        return _sequence(value, tp, origin, args, where)
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Mismatch(where, f"expected an object, got {_describe(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = [m.value for m in tp]
            raise _Mismatch(where, f"expected one of {choices!r}, got {_describe(value)}") from None
    if _is_model(tp):
        try:
            return tp.model_validate(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise _Mismatch(where, f"{_name(tp)}: {exc}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(value, tp, where)
    if isinstance(tp, type) and is_typeddict(tp):
        return _typeddict(value, tp, where)
    raise TypeError(f"output={_name(tp)} is not a type the ingress client can decode into")


def _sequence(value: list[Any], tp: Any, origin: Any, args: tuple[Any, ...], where: str) -> Any:
    if tp is list or tp is tuple or not args:
        items = list(value)
        return tuple(items) if tp is tuple or origin is tuple else items
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Mismatch(where, f"expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _dataclass(value: Any, tp: type, where: str) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"expected an object for {tp.__name__}, got {_describe(value)}")
    hints = _hints(tp)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        if f.name in value:
            kwargs[f.name] = _convert(value[f.name], hints.get(f.name, Any), f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Mismatch(where, f"{tp.__name__} needs {f.name!r}, which the answer lacks")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ that refuses the values
        raise _Mismatch(where, f"{tp.__name__}: {exc}") from None


def _typeddict(value: Any, tp: type, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"expected an object for {tp.__name__}, got {_describe(value)}")
    hints = _hints(tp)
    # not __required_keys__: under ``from __future__ import annotations`` Python 3.11 cannot
    # see NotRequired[...] in the strings it holds, and counts every key as required
    total = getattr(tp, "__total__", True)
    required = {
        k
        for k, h in hints.items()
        if get_origin(h) is Required or (total and get_origin(h) is not NotRequired)
    }
    missing = sorted(required - value.keys())
    if missing:
        raise _Mismatch(where, f"{tp.__name__} needs {', '.join(map(repr, missing))}")
    return {k: _convert(v, hints[k], f"{where}.{k}") if k in hints else v for k, v in value.items()}


def _hints(tp: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass or TypedDict; names that cannot be resolved (a
    class defined inside a function under ``from __future__ import annotations``) are ``Any``."""
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except (NameError, TypeError):
        raw: dict[str, Any] = {}
        for klass in reversed(tp.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        return {k: Any if isinstance(v, str) else v for k, v in raw.items()}


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_validate", None))


def _name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not get_args(tp) else repr(tp)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    name = kind.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)
    text = orjson.dumps(value).decode()
    return f"{name} {text[:60] + '...' if len(text) > 60 else text}"
