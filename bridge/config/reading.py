"""Reading a document: where each key stands (``PATH:LINE``), the problems found, and a value read
by its field's type hint (``int``, ``timedelta``, ``Literal``, ``str``, ``bool``, ``Annotated``)."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from ..core.durations import DurationError, DurationTooLong, parse_duration
from .schema import (
    ENV_OVERRIDES,
    HINTS,
    INT32_MAX,
    POSITIVE_DURATION,
    POSITIVE_INT,
    Check,
    CommaList,
    Hint,
    Range,
)

# -- locating keys in the file ----------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)([^\]]*)\]\]?\s*(?:#.*)?")
"""A table header; linear on any line (no two quantifiers compete for the same characters)."""
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-\"' ]+")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=")


def locate(text: str) -> dict[tuple[Any, ...], int]:
    """Line numbers of tables and keys: ``("kafka",)``, ``("routes", 0, "target")``, ...

    Lines are counted as TOML counts them: only ``\\n`` ends one.
    """
    lines: dict[tuple[Any, ...], int] = {}
    section: tuple[Any, ...] = ()
    counts: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        header = _HEADER.fullmatch(line)
        if header and _TABLE_NAME.fullmatch(header.group(2)):
            name = header.group(2).strip().strip("\"'")
            if header.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                section = (name, index)
            else:  # [routes.match] belongs to the latest [[routes]]
                first, *rest = name.split(".")
                section = (first, counts[first], *rest) if first in counts else (first, *rest)
            lines.setdefault(section, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*section, key.group(1).strip("\"'")), number)
    return lines


class Problems:
    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[str] = []

    def line(self, *where: Any) -> int:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return 1

    def add(self, where: tuple[Any, ...], message: str) -> None:
        self.items.append(f"{self.path}:{self.line(*where)}: {one_line(message)}")

    def env(self, name: str, message: str) -> None:
        self.items.append(f"${bare(name)}: {one_line(message)}")


def one_line(message: str) -> str:
    """Each problem is one line, whatever a quoted value holds."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def bare(name: str) -> str:
    """A table or variable name as written when it is a plain word, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else repr(name)


def label(where: tuple[Any, ...]) -> str:
    if not where:
        return "the file"
    if where[0] == "routes" and len(where) > 1:
        return f"[[routes]] #{where[1] + 1}"
    return f"[{where[0]}]"


# -- scalar tables, from the type hints ------------------------------------------------------


def read_section(
    cls: type[Any], name: str, value: Any, env: Mapping[str, str], problems: Problems
) -> Any:
    """One scalar table as ``cls``, or ``None`` when it is unusable (problems are recorded)."""
    where = (name,)
    if not isinstance(value, dict):
        problems.add(where, f"[{name}] must be a table")
        return None
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("from_env")]
    allowed = {f.name for f in fields}
    meant = set()  # keys a misspelt one stands for: not reported missing as well
    for key in value:
        if key not in allowed:
            close = closest(key, allowed)
            if close is not None:
                meant.add(close)
            problems.add((*where, key), unknown_key(key, f"[{name}]", allowed, close))
    hints = HINTS[cls]
    kwargs: dict[str, Any] = {}
    complete = True
    for spec in fields:
        hint = hints[spec.name]
        required = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        variable = ENV_OVERRIDES.get((name, spec.name))
        if spec.name in value:
            read, wrong = read_value(value[spec.name], hint, spec.name)
            if wrong is not None:
                problems.add((*where, spec.name), wrong)
            else:
                kwargs[spec.name] = read
        override = env.get(variable) if variable else None
        if variable and override:
            read, wrong = read_value(override, hint, spec.name)
            if wrong is not None:
                problems.env(variable, wrong)
                kwargs.pop(spec.name, None)
            else:
                kwargs[spec.name] = read
        if required and spec.name not in kwargs:
            complete = False
            if spec.name not in value and not (variable and override) and spec.name not in meant:
                problems.add(where, _missing(name, spec.name, hint))
    return cls(**kwargs) if complete else None


def closest(key: Any, allowed: Iterable[str]) -> str | None:
    """The allowed key ``key`` is most likely a misspelling of, if one is close enough."""
    if not isinstance(key, str):
        return None
    found = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key(key: str, where: str, allowed: Iterable[str], close: str | None) -> str:
    """``unknown key 'handlr' in [[routes]] #1; did you mean 'handler'?``, or the keys allowed."""
    if close is not None:
        return f"unknown key {key!r} in {where}; did you mean {close!r}?"
    return f"unknown key {key!r} in {where}; expected one of {', '.join(sorted(allowed))}"


def _missing(section: str, key: str, hint: Any) -> str:
    text = next((m.text for m in _markers(hint) if isinstance(m, Hint)), None)
    return f"[{section}] needs {key}" + (f", {text}" if text else "")


def _markers(hint: Any) -> tuple[Any, ...]:
    return get_args(hint)[1:] if get_origin(hint) is Annotated else ()


def read_value(value: Any, hint: Any, key: str) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint``, else ``(None, problem)``."""
    markers = _markers(hint)
    base = get_args(hint)[0] if markers else hint
    if get_origin(base) in (Union, types.UnionType):  # X | None: present means X
        base = next(a for a in get_args(base) if a is not type(None))
    if get_origin(base) is Annotated:
        markers += _markers(base)
        base = get_args(base)[0]
    bounds = next((m for m in markers if isinstance(m, Range)), None)
    hint_text = next((m.text for m in markers if isinstance(m, Hint)), None)
    if get_origin(base) is Literal:
        choices = get_args(base)
        if not isinstance(value, str) or value not in choices:
            return None, f"{key} must be one of {', '.join(choices)}, not {short(value)}"
        read: Any = value
    elif base is bool:
        if not isinstance(value, bool):
            return None, f"{key} must be true or false"
        read = value
    elif base is int:
        read, wrong = _integer(value, key, bounds or POSITIVE_INT)
        if wrong is not None:
            return None, wrong
    elif base is timedelta:
        read, wrong = _duration(value, key, bounds or POSITIVE_DURATION)
        if wrong is not None:
            return None, wrong
    elif base is str:
        joins = any(isinstance(m, CommaList) for m in markers)
        if joins and isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            value = ",".join(value)
        if not isinstance(value, str) or not value:
            if hint_text is not None:
                return None, f"{key} must be {hint_text}"
            return None, f"{key!r} must be a non-empty string"
        read = value
    else:  # pragma: no cover - a field type this reader does not know is a programming error
        raise TypeError(f"no reader for {key}: {hint!r}")
    for marker in markers:
        if isinstance(marker, Check):
            wrong = marker.rule(read)
            if wrong is not None:
                return None, wrong
    return read, None


def _integer(value: Any, key: str, bounds: Range) -> tuple[int | None, str | None]:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and bounds.low <= value <= bounds.high:
        return value, None
    if bounds == POSITIVE_INT and not (ok and value > INT32_MAX):
        return None, f"{key!r} must be a positive integer"
    return None, f"{key!r} must be an integer from {bounds.low} to {bounds.high}"


def _duration(value: Any, key: str, bounds: Range) -> tuple[timedelta | None, str | None]:
    if not isinstance(value, str):
        return None, f"{key!r} must be a duration string such as '4s'"
    try:
        read = parse_duration(value)
    except DurationTooLong:
        return None, f"{key!r}: {short(value)} is too long; at most {human(bounds.high)}"
    except DurationError as exc:
        return None, f"{key!r}: {exc}"
    if read > bounds.high:
        return None, f"{key!r}: {short(value)} is too long; at most {human(bounds.high)}"
    if read < bounds.low:
        if bounds.low == POSITIVE_DURATION.low:
            return None, f"{key!r} must be longer than zero, not {short(value)}"
        return None, f"{key!r} must be at least {human(bounds.low)}, not {short(value)}"
    return read, None


def human(delta: timedelta) -> str:
    if delta.days and not delta.seconds and not delta.microseconds:
        return f"{delta.days}d"
    return f"{delta.total_seconds():g}s"


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
